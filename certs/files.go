package certs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names WriteFiles uses: <name>.crt and <name>.key per pair.
const (
	CAName          = "ca"
	AgentName       = "agent"
	RelayName       = "relay"
	RelayClientName = "relay-client"
	ClientName      = "client"
)

func (s *Set) pairs() map[string]Pair {
	return map[string]Pair{CAName: s.CA, AgentName: s.Agent, RelayName: s.Relay,
		RelayClientName: s.RelayClient, ClientName: s.Client}
}

// WriteFiles writes every pair into dir (created 0700): keys 0600,
// certificates 0644. It refuses to overwrite unless force is set.
func (s *Set) WriteFiles(dir string, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !force {
		for name := range s.pairs() {
			p := filepath.Join(dir, name+".crt")
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("%s %w (--force replaces it)", p, errExists)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	for name, p := range s.pairs() {
		// Key first, each by rename: a reloading server never sees a
		// certificate without its key for long, and never a torn file.
		if err := writeAtomic(filepath.Join(dir, name+".key"), p.Key, 0o600); err != nil {
			return err
		}
		if err := writeAtomic(filepath.Join(dir, name+".crt"), p.Cert, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
