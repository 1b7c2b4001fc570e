// Package image builds container images of static binaries on an empty
// base, without a container engine, as docker-archive tarballs (the format
// `docker load` and `ctr images import` read).
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one file of the image: Src on this machine, Dst absolute in the
// image.
type File struct {
	Src, Dst string
	Mode     fs.FileMode // 0 = 0755
}

// Spec describes an image.
type Spec struct {
	// Ref is the image's name and tag, e.g. "loupe:0.1.0".
	Ref        string
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string // default PATH=/usr/bin:/bin
	User       string   // "" = root
	Arch       string   // default runtime.GOARCH
	// AllowDynamic accepts dynamically linked ELF files, which cannot run
	// on the empty base.
	AllowDynamic bool
}

// epoch stamps every file and the image, so the same binaries always give
// the same image digest.
var epoch = time.Unix(0, 0).UTC()

// Build assembles the image in memory.
func Build(s Spec) (v1.Image, name.Tag, error) {
	tag, err := name.NewTag(s.Ref)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image: %w", err)
	}
	layerTar, err := layerTar(s)
	if err != nil {
		return nil, name.Tag{}, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image: layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = s.Arch
	if cf.Architecture == "" {
		cf.Architecture = runtime.GOARCH
	}
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = s.Env
	if len(cf.Config.Env) == 0 {
		cf.Config.Env = []string{"PATH=/usr/bin:/bin"}
	}
	cf.Config.User = s.User
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, name.Tag{}, fmt.Errorf("image: %w", err)
	}
	return img, tag, nil
}

// WriteFile builds the image and writes it as a docker-archive tarball,
// atomically.
func WriteFile(out string, s Spec) error {
	img, tag, err := Build(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image: write %s: %w", out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

// layerTar is the single layer: the files and their parent folders.
func layerTar(s Spec) ([]byte, error) {
	if len(s.Files) == 0 {
		return nil, errors.New("image: no files")
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	seen := map[string]bool{}
	files := slices.Clone(s.Files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Dst, b.Dst) })
	for _, f := range files {
		if !path.IsAbs(f.Dst) || path.Clean(f.Dst) != f.Dst || f.Dst == "/" {
			return nil, fmt.Errorf("image: destination %q must be a clean absolute file path", f.Dst)
		}
		dst := strings.TrimPrefix(f.Dst, "/")
		if seen[dst] {
			return nil, fmt.Errorf("image: %s given twice", f.Dst)
		}
		seen[dst] = true
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if !s.AllowDynamic {
			if err := checkStatic(f.Src, data); err != nil {
				return nil, err
			}
		}
		var parents []string
		for d := path.Dir(dst); d != "."; d = path.Dir(d) {
			parents = append(parents, d)
		}
		slices.Reverse(parents)
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return nil, fmt.Errorf("image: %w", err)
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: int64(mode.Perm()), Size: int64(len(data)),
			ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if _, err := tw.Write(data); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return buf.Bytes(), nil
}

// checkStatic refuses an ELF file that needs a dynamic loader: the base
// is empty, so it could not start.
func checkStatic(src string, data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil // not ELF: scripts, configs
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("image: %s is dynamically linked (build it with CGO_ENABLED=0)", src)
		}
	}
	return nil
}
