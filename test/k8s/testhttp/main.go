// Command testhttp is the end-to-end test's only container image besides
// loupe: `testhttp pause` is the pod sandbox (it waits for a signal), and
// `testhttp serve ADDR` answers GET / with the pod's name and GET
// /fetch?url=URL with what URL answered, so the test makes pods talk to
// each other by pod IP.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testhttp pause | serve ADDR | get URL")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch os.Args[1] {
	case "pause":
		<-ctx.Done()
	case "serve":
		addr := ":8080"
		if len(os.Args) > 2 {
			addr = os.Args[2]
		}
		if err := serve(ctx, addr); err != nil {
			fmt.Fprintln(os.Stderr, "testhttp:", err)
			os.Exit(1)
		}
	case "get":
		// The test's client on the node: prints the body, fails on non-200.
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: testhttp get URL")
			os.Exit(2)
		}
		if err := get(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "testhttp:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "testhttp: unknown command", os.Args[1])
		os.Exit(2)
	}
}

func get(url string) error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	os.Stdout.Write(b)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func serve(ctx context.Context, addr string) error {
	name, _ := os.Hostname()
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, name)
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
