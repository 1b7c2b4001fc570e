package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"

	"github.com/loupe-project/loupe/internal/testtools"
)

// These tests run the stock hubble CLI, built from the github.com/cilium/cilium
// module by test/tools/build.sh, against the same in-process Observer server
// as `loupe observe`, and check that both send the same requests and print
// the same output.

// hubbleCmd prepares the hubble CLI with a clean environment: no config file
// (hubble reads ./config.yaml and ~/.config/hubble) and no HUBBLE_* variables.
func hubbleCmd(t *testing.T, ctx context.Context, bin string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "TERM=dumb"}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	return cmd, &out, &errOut
}

func runHubble(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, out, errOut := hubbleCmd(t, ctx, bin, args...)
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// runHubbleFollow runs hubble with --follow until the server has its
// request, then interrupts it as Ctrl-C would.
func runHubbleFollow(t *testing.T, bin string, f *fakeObserver, args ...string) error {
	t.Helper()
	f.mu.Lock()
	f.notify = make(chan struct{}, 1)
	notify := f.notify
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.notify = nil
		f.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, _, errOut := hubbleCmd(t, ctx, bin, args...)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-notify:
	case err := <-done:
		return errors.Join(err, errors.New(errOut.String()))
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return errors.Join(err, errors.New(errOut.String()))
	}
	return nil
}

// TestCompatHubbleFilters checks that every filter case sends the exact
// GetFlowsRequest that `hubble observe` sends for the same flags.
func TestCompatHubbleFilters(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	fake := &fakeObserver{}
	addr := startFake(t, fake)

	type compatCase struct {
		name          string
		args          []string
		hubbleRejects bool
	}
	var cases []compatCase
	for _, fc := range filterCases {
		cases = append(cases, compatCase{fc.name, fc.args, fc.hubbleRejects})
	}
	cases = append(cases,
		compatCase{name: "last", args: []string{"--last", "5"}},
		compatCase{name: "first", args: []string{"--first", "3", "--pod", "x"}},
		compatCase{name: "all", args: []string{"--all", "--not", "-n", "kube-system"}},
		compatCase{name: "since until", args: []string{"--since", "2024-01-02T03:04:05Z", "--until", "2024-01-02T04:00:00.5Z"}},
		compatCase{name: "since day", args: []string{"--since", "2024-01-02", "--all"}},
		compatCase{name: "field mask", args: []string{"--field-mask", "time,source.pod_name,verdict"}},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"observe", "--server", addr, "-o", "json"}, tc.args...)
			_, stderr, err := runHubble(t, bin, args...)
			if tc.hubbleRejects {
				if err == nil {
					fake.takeRequest(t)
					t.Fatalf("hubble accepted %v, which the case says it rejects", tc.args)
				}
				return
			}
			if err != nil {
				t.Fatalf("hubble %v: %v\n%s", args, err, stderr)
			}
			want := fake.takeRequest(t)
			if _, stderr, err := run(t, NewObserveCommand(), args[1:]...); err != nil {
				t.Fatalf("loupe: %v\n%s", err, stderr)
			}
			got := fake.takeRequest(t)
			if !proto.Equal(got, want) {
				t.Errorf("loupe and hubble sent different requests for %v:\nhubble %v\nloupe  %v", tc.args, want, got)
			}
		})
	}

	t.Run("follow", func(t *testing.T) {
		args := []string{"observe", "--server", addr, "-o", "json", "-f", "--to-pod", "shop/db", "--until", "1h"}
		if err := runHubbleFollow(t, bin, fake, args...); err != nil {
			t.Fatalf("hubble: %v", err)
		}
		want := fake.takeRequest(t)
		if _, _, err := runFollow(t, NewObserveCommand(), fake, nil, args[1:]...); err != nil {
			t.Fatalf("loupe: %v", err)
		}
		if got := fake.takeRequest(t); !proto.Equal(got, want) {
			t.Errorf("follow requests differ:\nhubble %v\nloupe  %v", want, got)
		}
	})

	// The text outputs ask for a field mask; loupe's also names the fields its
	// printer reads that hubble's list lacks (DNS names, auth, capture point).
	t.Run("compact filters", func(t *testing.T) {
		args := []string{"observe", "--server", addr, "--pod", "web", "--not", "--verdict", "DROPPED"}
		if _, stderr, err := runHubble(t, bin, args...); err != nil {
			t.Fatalf("hubble: %v\n%s", err, stderr)
		}
		want := fake.takeRequest(t)
		if _, _, err := run(t, NewObserveCommand(), args[1:]...); err != nil {
			t.Fatal(err)
		}
		got := fake.takeRequest(t)
		for _, p := range want.GetFieldMask().GetPaths() {
			if !strings.Contains(","+strings.Join(got.GetFieldMask().GetPaths(), ",")+",", ","+p+",") {
				t.Errorf("loupe's field mask lacks %q, which hubble asks for", p)
			}
		}
		want.FieldMask, got.FieldMask = nil, nil
		if !proto.Equal(got, want) {
			t.Errorf("requests differ:\nhubble %v\nloupe  %v", want, got)
		}
	})
}

// TestCompatHubbleFilterCorpus sends FuzzObserveFilterArgs's seeds and its
// committed corpus (testdata/fuzz, where the fuzzer's findings go) to both
// CLIs' --print-raw-filters: for the inputs both accept, the filters must be
// the same. Inputs only one of them accepts are logged: loupe rejects some
// flag values hubble lets through, and the reverse (filterCases'
// hubbleRejects).
func TestCompatHubbleFilterCorpus(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	inputs := slices.Clone(observeFilterSeeds)
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzObserveFilterArgs", "*"))
	for _, name := range files {
		s, err := readStringCorpusFile(name)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, s)
	}
	compared := 0
	for _, s := range inputs {
		args := strings.Split(s, "\x00")
		lOut, help, lErr := printRawFiltersOf(t, args)
		if help {
			continue // both print their help, which differ
		}
		hOut, hStderr, hErr := runHubble(t, bin, append(append([]string{"observe"}, args...), "--print-raw-filters")...)
		if lErr != nil || hErr != nil {
			if (lErr == nil) != (hErr == nil) {
				t.Logf("%q: loupe: %v; hubble: %v %s", args, lErr, hErr, hStderr)
			}
			continue
		}
		_, _, lwl, lbl, err := rawFilters(lOut)
		if err != nil {
			t.Fatalf("%q: loupe: %v\n%s", args, err, lOut)
		}
		_, _, hwl, hbl, err := rawFilters(hOut)
		if err != nil {
			t.Fatalf("%q: hubble: %v\n%s", args, err, hOut)
		}
		equal := func(a, b []*flowpb.FlowFilter) bool {
			return slices.EqualFunc(a, b, func(x, y *flowpb.FlowFilter) bool { return proto.Equal(x, y) })
		}
		if !equal(lwl, hwl) || !equal(lbl, hbl) {
			t.Errorf("%q: the CLIs print different filters:\nhubble:\n%s\nloupe:\n%s", args, hOut, lOut)
		}
		compared++
	}
	t.Logf("%d of %d inputs accepted by both and compared", compared, len(inputs))
	if compared < len(observeFilterSeeds)/2 {
		t.Errorf("only %d inputs compared: the corpus no longer tests what hubble sends", compared)
	}
}

// readStringCorpusFile reads a go test fuzz v1 file of one string value.
func readStringCorpusFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
		!strings.HasPrefix(lines[1], "string(") || !strings.HasSuffix(lines[1], ")") {
		return "", fmt.Errorf("%s: not a go test fuzz v1 file of one string", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// TestCompatHubbleOutput checks that loupe prints what hubble prints, byte
// for byte, in every output format.
func TestCompatHubbleOutput(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	resp := append(fixtureResponses(),
		nodeStatusResponse(relaypb.NodeState_NODE_UNAVAILABLE, "", "node-c", "node-d"),
		nodeStatusResponse(relaypb.NodeState_NODE_ERROR, "connection refused", "node-e"))
	addr := startFake(t, &fakeObserver{responses: resp})

	for _, args := range [][]string{
		{"-o", "json"},
		{"-o", "jsonpb"},
		{"-o", "compact", "--color", "never"},
		{"-o", "compact", "--color", "always"},
		{"-o", "compact", "--color", "never", "--print-node-name", "--print-policy-names", "--time-format", "RFC3339Nano"},
		{"-o", "compact", "--color", "never", "--numeric"},
		{"-o", "dict", "--color", "never"},
		{"-o", "dict", "--color", "never", "--print-node-name", "--print-policy-names"},
		{"-o", "table"},
		{"-o", "table", "--print-node-name", "--time-format", "RFC3339"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			full := append([]string{"observe", "--server", addr}, args...)
			hOut, hErr, err := runHubble(t, bin, full...)
			if err != nil {
				t.Fatalf("hubble: %v\n%s", err, hErr)
			}
			lOut, lErr, err := run(t, NewObserveCommand(), full[1:]...)
			if err != nil {
				t.Fatalf("loupe: %v", err)
			}
			if slices.Contains(args, "always") {
				// The one deliberate difference: hubble lets a color sequence
				// inside a name through to the terminal; loupe escapes it.
				const evil, escaped = "\x1b[31mspoofer", "^[[31mspoofer"
				if !strings.Contains(hOut, evil) || !strings.Contains(lOut, escaped) || strings.Contains(lOut, evil) {
					t.Errorf("escape of a colored pod name: hubble %q, loupe %q", hOut, lOut)
				}
				hOut = strings.ReplaceAll(hOut, evil, escaped)
			}
			if lOut != hOut {
				t.Errorf("stdout differs\nhubble:\n%s\nloupe:\n%s", hOut, lOut)
			}
			// hubble may log warnings of its own on stderr; the notices
			// loupe prints must be among hubble's lines.
			for _, l := range strings.SplitAfter(lErr, "\n") {
				if l != "" && !strings.Contains(hErr, l) {
					t.Errorf("loupe's notice %q is not in hubble's stderr:\n%s", l, hErr)
				}
			}
			notices := strings.Count(lErr, "\n")
			if slices.Contains(args, "dict") {
				notices = strings.Count(lErr, "STATE: ")
			}
			if notices != 2 {
				t.Errorf("loupe printed %d notices, want 2:\n%s", notices, lErr)
			}
		})
	}
}

// TestCompatHubbleJSONLostEvents checks that -o json writes lost events to
// stdout, in stream order with the flows, byte for byte as hubble does, and
// node status to stderr as hubble does: a flows file saved from either CLI
// carries the losses that make `loupe policy verify --flows-file` incomplete.
// (The text formats keep lost events on stderr, unlike hubble's.)
func TestCompatHubbleJSONLostEvents(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	flows := fixtureResponses()
	windowed := lostEventsResponse(3)
	windowed.GetLostEvents().Source = flowpb.LostEventSource_PERF_EVENT_RING_BUFFER
	windowed.GetLostEvents().First, windowed.GetLostEvents().Last = ts(base+8, 5), ts(base+9, 0)
	resp := []*observerpb.GetFlowsResponse{
		flows[0], lostEventsResponse(17),
		nodeStatusResponse(relaypb.NodeState_NODE_UNAVAILABLE, "", "node-c"),
		flows[1], windowed, flows[2],
	}
	addr := startFake(t, &fakeObserver{responses: resp})
	for _, format := range []string{"json", "jsonpb"} {
		t.Run(format, func(t *testing.T) {
			args := []string{"observe", "--server", addr, "-o", format}
			hOut, hErr, err := runHubble(t, bin, args...)
			if err != nil {
				t.Fatalf("hubble: %v\n%s", err, hErr)
			}
			lOut, lErr, err := run(t, NewObserveCommand(), args[1:]...)
			if err != nil {
				t.Fatalf("loupe: %v", err)
			}
			if lOut != hOut {
				t.Errorf("stdout differs\nhubble:\n%s\nloupe:\n%s", hOut, lOut)
			}
			if n := strings.Count(hOut, `{"lost_events":`); n != 2 || strings.Contains(hOut, "node_status") {
				t.Errorf("hubble's stdout has %d lost_events records, want 2 and no node_status:\n%s", n, hOut)
			}
			if !strings.Contains(hErr, `"node_status"`) || !strings.Contains(lErr, `"node_status"`) || strings.Contains(lErr, "lost_events") {
				t.Errorf("stderr: hubble:\n%s\nloupe:\n%s", hErr, lErr)
			}
		})
	}
}

// TestCompatHubbleList checks list nodes/namespaces -o json against hubble's.
func TestCompatHubbleList(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	addr := startFake(t, clusterFake())
	for _, args := range [][]string{
		{"nodes", "-o", "json"}, {"nodes"}, {"nodes", "-o", "wide"},
		{"namespaces", "-o", "json"}, {"namespaces"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			full := append(append([]string{"list"}, args...), "--server", addr)
			hOut, hErr, err := runHubble(t, bin, full...)
			if err != nil {
				t.Fatalf("hubble: %v\n%s", err, hErr)
			}
			lOut, _, err := run(t, NewListCommand(), full[1:]...)
			if err != nil {
				t.Fatalf("loupe: %v", err)
			}
			if lOut != hOut {
				t.Errorf("output differs\nhubble:\n%s\nloupe:\n%s", hOut, lOut)
			}
		})
	}
}

// TestCompatHubbleStatus checks that the stock `hubble status` accepts the
// fake server (health service name and ServerStatus), so the test server is
// a faithful stand-in.
func TestCompatHubbleStatus(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	addr := startFake(t, clusterFake())
	out, stderr, err := runHubble(t, bin, "status", "--server", addr)
	if err != nil {
		t.Fatalf("hubble status: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(out, "Healthcheck (via "+addr+"): Ok") || !strings.Contains(out, "Current/Max Flows: 12,345/65,535") {
		t.Errorf("hubble status:\n%s", out)
	}
	if _, _, err := run(t, NewStatusCommand(), "--server", addr); err != nil {
		t.Errorf("loupe status: %v", err)
	}
}
