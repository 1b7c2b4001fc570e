package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestPodCIDRFlagRepeatedOrCommaSeparated(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd01::/64")}
	for _, args := range [][]string{
		{"--pod-cidr", "10.1.0.0/24,fd01::/64"},
		{"--pod-cidr", "10.1.0.0/24", "--pod-cidr", "fd01::/64"},
	} {
		cmd := newRootCommand()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		raw, err := cmd.Flags().GetStringSlice("pod-cidr")
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseCIDRs(raw)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%v: got %v %v", args, got, err)
		}
	}
	if _, err := parseCIDRs([]string{"10.1.0.0"}); err == nil {
		t.Fatal("a CIDR without a length was accepted")
	}
}
