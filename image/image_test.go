package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// readTar returns every regular file of a tar stream, and the names in order.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, []string, map[string]*tar.Header) {
	t.Helper()
	files := map[string][]byte{}
	hdrs := map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, names, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
	}
}

func TestDockerArchiveLayout(t *testing.T) {
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	payload := []byte("#!/not/elf\nhello\n")
	if err := os.WriteFile(hello, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "images", "hello.tar")
	spec := Spec{Ref: "loupe-hello:0.1.0", Files: []File{{Src: hello, Dst: "/usr/bin/hello"}},
		Entrypoint: []string{"/usr/bin/hello"}, Cmd: []string{"serve"}, Arch: "amd64"}
	if err := WriteFile(out, spec); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	outer, _, _ := readTar(t, f)

	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(outer["manifest.json"], &manifest); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != 1 || !slices.Equal(manifest[0].RepoTags, []string{"loupe-hello:0.1.0"}) {
		t.Fatalf("manifest.json: %+v", manifest)
	}
	var cfg struct {
		OS, Architecture string
		Config           struct{ Entrypoint, Cmd, Env []string }
		RootFS           struct {
			Type    string
			DiffIDs []string `json:"diff_ids"`
		}
	}
	if err := json.Unmarshal(outer[manifest[0].Config], &cfg); err != nil {
		t.Fatalf("config %s: %v", manifest[0].Config, err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || !slices.Equal(cfg.Config.Entrypoint, spec.Entrypoint) ||
		!slices.Equal(cfg.Config.Cmd, spec.Cmd) || !slices.Equal(cfg.Config.Env, []string{"PATH=/usr/bin:/bin"}) {
		t.Errorf("config: %+v", cfg)
	}
	layerGz, ok := outer[manifest[0].Layers[0]]
	if !ok {
		t.Fatalf("layer %s not in the archive", manifest[0].Layers[0])
	}
	zr, err := gzip.NewReader(bytes.NewReader(layerGz))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(layer)
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v do not match the layer", cfg.RootFS.DiffIDs)
	}
	files, names, hdrs := readTar(t, bytes.NewReader(layer))
	if !slices.Equal(names, []string{"usr/", "usr/bin/", "usr/bin/hello"}) {
		t.Errorf("layer entries %v", names)
	}
	if !bytes.Equal(files["usr/bin/hello"], payload) || hdrs["usr/bin/hello"].Mode != 0o755 || hdrs["usr/bin/hello"].Uid != 0 {
		t.Errorf("usr/bin/hello: %q mode %o", files["usr/bin/hello"], hdrs["usr/bin/hello"].Mode)
	}

	// go-containerregistry reads it back as a valid image, and the same
	// inputs give the same digest.
	img, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}
	again, _, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("digest changed between builds: %s %s", d1, d2)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Errorf("temporary files left next to the image: %v", ents)
	}
}

func TestRejectsDynamicBinariesAndBadPaths(t *testing.T) {
	dyn := "/bin/sh" // Debian's is dynamically linked
	if _, _, err := Build(Spec{Ref: "x:1", Files: []File{{Src: dyn, Dst: "/sh"}}}); err == nil {
		t.Errorf("accepted dynamically linked %s", dyn)
	}
	if _, _, err := Build(Spec{Ref: "x:1", Files: []File{{Src: dyn, Dst: "/sh"}}, AllowDynamic: true}); err != nil {
		t.Errorf("AllowDynamic: %v", err)
	}
	ok := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(ok, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []Spec{
		{Ref: "x:1"},
		{Ref: "x:1", Files: []File{{Src: ok, Dst: "rel/path"}}},
		{Ref: "x:1", Files: []File{{Src: ok, Dst: "/a/../b"}}},
		{Ref: "x:1", Files: []File{{Src: ok, Dst: "/a"}, {Src: ok, Dst: "/a"}}},
		{Ref: "UPPER:1", Files: []File{{Src: ok, Dst: "/a"}}},
	} {
		if _, _, err := Build(s); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}
