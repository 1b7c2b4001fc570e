package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/internal/version"
	"github.com/loupe-project/loupe/metadata/k8s"
)

// podCIDRWait bounds the wait for the controller-manager to give a freshly
// registered node its pod CIDR.
const podCIDRWait = 2 * time.Minute

// useKubernetes decides where metadata comes from: an explicit kubeconfig,
// else the in-cluster environment unless a manifests folder is given.
func useKubernetes(kubeconfig, manifestsDir string) (bool, error) {
	if kubeconfig != "" && manifestsDir != "" {
		return false, errors.New("--k8s-kubeconfig and --manifests-dir are exclusive")
	}
	return kubeconfig != "" || (manifestsDir == "" && k8s.InCluster()), nil
}

// setupKubernetes points cfg at the API server: its metadata source and,
// when no --pod-cidr was given, the node's spec.podCIDR.
func setupKubernetes(ctx context.Context, cfg *daemon.Config, kubeconfig string, log *slog.Logger) error {
	client, err := k8s.NewClient(kubeconfig, "loupe-agent/"+version.Version)
	if err != nil {
		return err
	}
	if len(cfg.PodCIDRs) == 0 {
		if cfg.NodeName == "" {
			return errors.New("--node-name is required")
		}
		cidrs, err := waitPodCIDRs(ctx, func(ctx context.Context) ([]netip.Prefix, error) {
			return k8s.NodePodCIDRs(ctx, client, cfg.NodeName)
		}, podCIDRWait, time.Second, log)
		if err != nil {
			return err
		}
		cfg.PodCIDRs = cidrs
		log.Info("pod CIDR from the Node object", "node", cfg.NodeName, "pod_cidrs", cidrs)
	}
	src, err := k8s.New(ctx, client, k8s.Options{Log: log.With("component", "k8s-metadata")})
	if err != nil {
		return err
	}
	cfg.Metadata = src
	log.Info("metadata from the API server", "kubeconfig", kubeconfig, "in_cluster", kubeconfig == "")
	return nil
}

// waitPodCIDRs retries get until it succeeds, ctx ends or wait passes.
func waitPodCIDRs(ctx context.Context, get func(context.Context) ([]netip.Prefix, error),
	wait, every time.Duration, log *slog.Logger) ([]netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		cidrs, err := get(ctx)
		if err == nil {
			return cidrs, nil
		}
		log.Info("waiting for the node's pod CIDR", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("pod CIDR: %w", err)
		case <-time.After(every):
		}
	}
}
