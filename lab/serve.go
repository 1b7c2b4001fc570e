package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// portSpec is one served port.
type portSpec struct {
	Port  int
	Proto string // TCP or UDP
	Name  string // the container port's name, if it has one
}

func (p portSpec) String() string {
	s := strconv.Itoa(p.Port) + "/" + p.Proto
	if p.Name != "" {
		s += "/" + p.Name
	}
	return s
}

// validPortName reports whether s is a Kubernetes port name (IANA_SVC_NAME:
// at most 15 lowercase letters, digits and inner hyphens), so it can never
// carry the separators of a port list.
func validPortName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// parsePorts reads "80/TCP,81/UDP,8000/TCP/http-api" (port/protocol/name).
func parsePorts(s string) ([]portSpec, error) {
	var out []portSpec
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		num, proto, ok := strings.Cut(f, "/")
		if !ok {
			proto = "TCP"
		}
		proto, name, named := strings.Cut(proto, "/")
		if named && !validPortName(name) {
			return nil, fmt.Errorf("port %q: name must be a Kubernetes port name (a-z, 0-9, '-', at most 15)", f)
		}
		port, err := strconv.Atoi(num)
		if err != nil || port < 1 || port > 65535 {
			return nil, fmt.Errorf("port %q: want 1-65535", f)
		}
		proto = strings.ToUpper(proto)
		if proto != "TCP" && proto != "UDP" {
			return nil, fmt.Errorf("port %q: protocol must be TCP or UDP", f)
		}
		out = append(out, portSpec{port, proto, name})
	}
	return out, nil
}

// isHTTPPort reports whether a port answers HTTP rather than echoing: TCP
// ports numbered 80 or 8080, or named http* (http, http-api, http2, ...).
func isHTTPPort(p portSpec) bool {
	return p.Proto == "TCP" && (p.Port == 80 || p.Port == 8080 || strings.HasPrefix(p.Name, "http"))
}

// serve runs a pod's servers until ctx ends. ready is called once every port listens.
func serve(ctx context.Context, pod string, ports []portSpec, dns dnsServer, log *slog.Logger, ready func()) error {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	errc := make(chan error, len(ports))
	for _, p := range ports {
		addr := ":" + strconv.Itoa(p.Port)
		switch {
		case isDNSPort(p.Port) && p.Proto == "UDP":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", p, err)
			}
			closers = append(closers, pc)
			go func() { errc <- dns.serveUDP(pc) }()
		case isDNSPort(p.Port):
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", p, err)
			}
			closers = append(closers, ln)
			go func() { errc <- dns.serveTCP(ln) }()
		case p.Proto == "UDP":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", p, err)
			}
			closers = append(closers, pc)
			go func() { errc <- serveUDP(pc) }()
		case isHTTPPort(p):
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", p, err)
			}
			closers = append(closers, ln)
			srv := &http.Server{Handler: podHandler(pod), ReadHeaderTimeout: 5 * time.Second}
			go func() { errc <- srv.Serve(ln) }()
		default:
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", p, err)
			}
			closers = append(closers, ln)
			go func() { errc <- serveEcho(ln) }()
		}
	}
	log.Info("serving", "pod", pod, "ports", len(ports))
	ready()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// podHandler answers every path with 200, except /status/<code> (that
// status) and /delay/<ms> (200 after that long, at most a minute), so lab
// traffic has errors and slow requests to show.
func podHandler(pod string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Loupe-Pod", pod)
		code := http.StatusOK
		if s, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if c, err := strconv.Atoi(s); err == nil && c >= 200 && c <= 599 {
				code = c
			}
		}
		if s, ok := strings.CutPrefix(r.URL.Path, "/delay/"); ok {
			if ms, err := strconv.Atoi(s); err == nil && ms >= 0 && ms <= 60000 {
				select {
				case <-time.After(time.Duration(ms) * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "%s %s from %s: %d\n", r.Method, r.URL.Path, pod, code)
	})
}

func serveEcho(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Minute))
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDP(pc net.PacketConn) error {
	buf := make([]byte, 64*1024)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("udp read: %w", err)
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// runServe is the hidden `loupe lab serve` command, started by the lab inside
// a pod's netns.
func runServe(pod, portsFlag, labDir string, readyFD int) error {
	ports, err := parsePorts(portsFlag)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ready := func() {}
	if readyFD > 0 {
		f := os.NewFile(uintptr(readyFD), "ready")
		ready = func() {
			_, _ = f.Write([]byte("ok\n"))
			f.Close()
		}
	}
	return serve(ctx, pod, ports, dnsServer{manifests: filepath.Join(labDir, "manifests")}, log, ready)
}
