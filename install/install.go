// Package install holds loupe's Kubernetes manifests (kubernetes/*.yaml,
// applied with `kubectl apply -f install/kubernetes/`) and decodes them
// strictly, for tests and for tools that rewrite image names.
package install

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/loupe-project/loupe/internal/yaml12"
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
// unknown kinds, unknown fields and duplicate fields are errors. Scalars
// are read as YAML 1.2, as the other readers of manifests read them.
func Decode(file string, data []byte) ([]Object, error) {
	var out []Object
	for d, err := range yaml12.Documents(data) {
		if err != nil {
			return nil, fmt.Errorf("install: %s document %d: %w", file, d.Index, err)
		}
		obj, _, err := strict.Decode(d.JSON, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("install: %s document %d: %w", file, d.Index, err)
		}
		out = append(out, Object{File: file, Obj: obj})
	}
	return out, nil
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
