package datapath

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
)

// Kallsyms names kernel code addresses (a kernel drop's location) from
// /proc/kallsyms. The file is read again for each address not yet named,
// and only the answer is kept: there are few distinct drop locations, and
// a table of every symbol would cost the agent megabytes.
type Kallsyms struct {
	path string

	mu    sync.Mutex
	cache map[uint64]string
}

// maxKallsymsCache bounds the names kept; the cache starts over when full.
const maxKallsymsCache = 4096

// NewKallsyms reads symbols from path ("" = /proc/kallsyms).
func NewKallsyms(path string) *Kallsyms {
	if path == "" {
		path = "/proc/kallsyms"
	}
	return &Kallsyms{path: path, cache: map[uint64]string{}}
}

// Function returns the name of the kernel function holding addr, or "" when
// it cannot be told (no such symbol, or addresses hidden by kptr_restrict).
func (k *Kallsyms) Function(addr uint64) string {
	if addr == 0 {
		return ""
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if s, ok := k.cache[addr]; ok {
		return s
	}
	name := ""
	if f, err := os.Open(k.path); err == nil {
		name, _, _ = NearestSymbol(f, addr)
		f.Close()
	}
	if len(k.cache) >= maxKallsymsCache {
		clear(k.cache)
	}
	k.cache[addr] = name
	return name
}

// NearestSymbol scans a kallsyms listing ("ffffffff81000000 T _stext",
// optionally followed by "\t[module]") for the code symbol at or below addr
// closest to it. It returns "" when there is none; a line it cannot parse
// is an error. Addresses of 0 (kptr_restrict) never match.
func NearestSymbol(r io.Reader, addr uint64) (name string, off uint64, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 4096)
	var best uint64
	line := 0
	for sc.Scan() {
		line++
		a, typ, sym, perr := parseKallsymsLine(sc.Bytes())
		if perr != nil {
			return "", 0, fmt.Errorf("kallsyms line %d: %w", line, perr)
		}
		if a == 0 || a > addr || a < best || (typ != 't' && typ != 'T') {
			continue
		}
		if a > best || name == "" {
			best, name = a, string(sym)
		}
	}
	if err := sc.Err(); err != nil {
		return "", 0, fmt.Errorf("kallsyms: %w", err)
	}
	if name == "" {
		return "", 0, nil
	}
	return name, addr - best, nil
}

func parseKallsymsLine(b []byte) (addr uint64, typ byte, sym []byte, err error) {
	f := bytes.Fields(b)
	if len(f) < 3 || len(f[1]) != 1 {
		return 0, 0, nil, fmt.Errorf("want \"address type name\", got %q", b)
	}
	addr, err = strconv.ParseUint(string(f[0]), 16, 64)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("address %q: %w", f[0], err)
	}
	return addr, f[1][0], f[2], nil
}
