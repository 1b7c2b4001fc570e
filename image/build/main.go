// Command build writes a docker-archive image of static binaries on an
// empty base (used by `make image`; load it with `ctr -n k8s.io images
// import FILE`):
//
//	go run ./image/build -o bin/images/loupe.tar -t loupe:0.1.0 \
//	    -entrypoint /usr/bin/loupe-agent -file bin/loupe-agent=/usr/bin/loupe-agent
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/loupe-project/loupe/image"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image/build:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	var (
		out, ref, user string
		files, entry   list
		cmd, env       list
		allowDynamic   bool
	)
	fs.StringVar(&out, "o", "", "output tarball (docker-archive)")
	fs.StringVar(&ref, "t", "", "image name and tag, e.g. loupe:0.1.0")
	fs.Var(&files, "file", "SRC=DST: a file of this machine and its absolute path in the image (repeatable)")
	fs.Var(&entry, "entrypoint", "entrypoint argument (repeatable, in order)")
	fs.Var(&cmd, "cmd", "default argument (repeatable, in order)")
	fs.Var(&env, "env", "KEY=VALUE (repeatable; default PATH=/usr/bin:/bin)")
	fs.StringVar(&user, "user", "", "user to run as (default root)")
	fs.BoolVar(&allowDynamic, "allow-dynamic", false, "accept dynamically linked binaries")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if out == "" || ref == "" || len(files) == 0 || fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("need -o, -t and at least one -file")
	}
	s := image.Spec{Ref: ref, Entrypoint: entry, Cmd: cmd, Env: env, User: user, AllowDynamic: allowDynamic}
	for _, f := range files {
		src, dst, ok := strings.Cut(f, "=")
		if !ok || src == "" || dst == "" {
			return fmt.Errorf("-file %q: want SRC=DST", f)
		}
		s.Files = append(s.Files, image.File{Src: src, Dst: dst})
	}
	if err := image.WriteFile(out, s); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%s)\n", out, ref)
	return nil
}
