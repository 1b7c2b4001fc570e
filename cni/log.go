package cni

import (
	"io"
	"log/slog"
	"os"
)

// Log attribute keys.
const (
	logKeyCmd         = "cmd"
	logKeyContainer   = "container_id"
	logKeyIfname      = "ifname"
	logKeyHostIfname  = "host_ifname"
	logKeyPod         = "pod"
	logKeyIPv4        = "ipv4"
	logKeyIPv6        = "ipv6"
	logKeyErr         = "err"
	logKeyAttachments = "valid_attachments"
)

// newLogger writes to LOUPE_CNI_LOG, else the netconf's logFile, else
// stderr; never stdout, which carries the CNI result. A log file that
// cannot be opened falls back to stderr rather than failing the command.
func newLogger(conf *NetConf) (*slog.Logger, func()) {
	dest := conf.LogFile
	if v, ok := os.LookupEnv(LogEnv); ok && v != "" {
		dest = v
	}
	var w io.Writer = os.Stderr
	closeFn := func() {}
	if dest != "" && dest != "-" && dest != "stderr" {
		f, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err == nil {
			w = f
			closeFn = func() { _ = f.Close() }
		}
	}
	level := slog.LevelInfo
	switch conf.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("plugin", "loupe-cni", "pid", os.Getpid()), closeFn
}
