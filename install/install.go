// Package install holds loupe's Kubernetes manifests (kubernetes/*.yaml,
// applied with `kubectl apply -f install/kubernetes/`) and decodes them
// strictly, for tests and for tools that rewrite image names.
package install

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// Kubernetes is the folder of manifests, in apply order.
//
//go:embed kubernetes/*.yaml
var Kubernetes embed.FS

// strict rejects unknown and duplicate fields.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Object is one decoded document and where it came from.
type Object struct {
	File string
	Obj  runtime.Object
}

// Decode decodes every document of a multi-document YAML file strictly:
// unknown kinds, unknown fields and duplicate fields are errors.
func Decode(file string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("install: %s document %d: %w", file, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strict.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("install: %s document %d: %w", file, i, err)
		}
		out = append(out, Object{File: file, Obj: obj})
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			b.Write(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// Objects decodes every manifest of fsys (e.g. Kubernetes) under dir, in
// file name order, as kubectl apply -f reads a folder.
func Objects(fsys fs.FS, dir string) ([]Object, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && (path.Ext(e.Name()) == ".yaml" || path.Ext(e.Name()) == ".yml") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	var out []Object
	for _, n := range names {
		b, err := fs.ReadFile(fsys, path.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		objs, err := Decode(n, b)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}
