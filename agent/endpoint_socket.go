package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"

	"github.com/loupe-project/loupe/api/endpoint/v1/endpointgrpc"
)

// Serving the endpoint API (endpoint_api.go) on the unix socket loupe-cni
// dials.

// Serve serves the endpoint API on the unix socket at path (mode 0600)
// until ctx is done, then stops gracefully and removes the socket. A stale
// socket left by a dead agent is removed first; a live one is an error.
func (a *Agent) Serve(ctx context.Context, path string) error {
	l, err := ListenUnix(path)
	if err != nil {
		return err
	}
	return a.ServeListener(ctx, l, path)
}

// ServeListener serves the endpoint API on l (from ListenUnix(path)) until
// ctx is done, then removes the socket file at path.
func (a *Agent) ServeListener(ctx context.Context, l net.Listener, path string) error {
	srv := grpc.NewServer()
	endpointgrpc.RegisterEndpointsServer(srv, NewServer(a))
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
	}()
	a.log.Info("endpoint api listening", "socket", path)
	err := srv.Serve(l)
	<-done
	_ = os.Remove(path)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve endpoint api: %w", err)
	}
	return nil
}

// ListenUnix listens on a unix socket at path with mode 0600. The socket
// is bound under a temporary name, restricted, then renamed into place, so
// it is never reachable with wider permissions.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	tmp := path + ".tmp-" + strconv.Itoa(os.Getpid())
	_ = os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	// The socket is removed by Serve under its final name.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("place socket: %w", err)
	}
	return l, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket: %w", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket path %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another agent is serving on it", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
