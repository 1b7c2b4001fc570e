package install

import (
	"io/fs"
	"testing"
)

// FuzzDecode: any bytes give objects or an error, never a panic.
func FuzzDecode(f *testing.F) {
	ents, _ := fs.ReadDir(Kubernetes, "kubernetes")
	for _, e := range ents {
		b, _ := fs.ReadFile(Kubernetes, "kubernetes/"+e.Name())
		f.Add(b)
	}
	f.Add([]byte("---\n---\n# only a comment\n"))
	f.Add([]byte("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1, bogus: 2}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := Decode("fuzz.yaml", b)
		if err == nil {
			for _, o := range objs {
				if o.Obj == nil {
					t.Fatal("nil object without an error")
				}
			}
		}
	})
}
