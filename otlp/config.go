package otlp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/internal/tlsreload"
)

// Flow export modes (--otlp-flows).
const (
	FlowsRaw        = "raw"
	FlowsAggregated = "aggregated"
	FlowsOff        = "off"
)

// Defaults of the export settings.
const (
	DefaultQueueSize           = 16384
	DefaultBatchSize           = 1024
	DefaultBatchTimeout        = time.Second
	DefaultRetryMaxElapsed     = time.Minute
	DefaultAggregationInterval = 10 * time.Second
	DefaultMaxEdges            = 10000
	DefaultMetricsInterval     = 30 * time.Second
	DefaultTimeout             = 10 * time.Second
)

// MinTLSVersion is TLS 1.2, below the 1.3 of loupe's own listeners: loupe
// dials collectors it does not run (vendors' gateways, collectors behind
// load balancers and meshes), and the collector's own default minimum is
// 1.2. Go still offers 1.3 first, so a collector that speaks it gets it.
const MinTLSVersion = tls.VersionTLS12

// Config is an exporter's settings; see Flags for their meaning.
type Config struct {
	Endpoint       string
	Insecure       bool
	CAFile         string
	ClientCertFile string
	ClientKeyFile  string
	ServerName     string
	Headers        []string // key=value, sent as gRPC metadata

	Flows               string
	AggregationInterval time.Duration
	MaxEdges            int
	MetricsInterval     time.Duration

	QueueSize       int
	BatchSize       int
	BatchTimeout    time.Duration
	RetryMaxElapsed time.Duration
	Timeout         time.Duration

	// ServiceName and ServiceVersion name the resource (service.name:
	// loupe-agent or loupe-relay); NodeName, when set, adds k8s.node.name.
	ServiceName    string
	ServiceVersion string
	NodeName       string
	Log            *slog.Logger

	// retryBase is the first retry delay (tests shorten it).
	retryBase time.Duration
}

// Flags registers the --otlp-* flags on fs, shared by loupe-agent and
// loupe-relay.
func (c *Config) Flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Endpoint, "otlp-endpoint", "", "OpenTelemetry collector's OTLP/gRPC address HOST:PORT to export flows and metrics to, over TLS unless --otlp-insecure; \"\" exports nothing")
	fs.BoolVar(&c.Insecure, "otlp-insecure", false, "send OTLP in plain text, unauthenticated (a collector on a private network); excludes the --otlp-*-file flags")
	fs.StringVar(&c.CAFile, "otlp-ca-file", "", "CA certificates (PEM) the collector's certificate must chain to; \"\" uses the system pool")
	fs.StringVar(&c.ClientCertFile, "otlp-client-cert-file", "", "client certificate presented to the collector (mTLS), with --otlp-client-key-file")
	fs.StringVar(&c.ClientKeyFile, "otlp-client-key-file", "", "key of --otlp-client-cert-file")
	fs.StringVar(&c.ServerName, "otlp-server-name", "", "name checked in the collector's certificate instead of the endpoint's host")
	fs.StringArrayVar(&c.Headers, "otlp-header", nil, "gRPC metadata key=value sent with every export, e.g. authorization=Bearer... (repeatable)")
	fs.StringVar(&c.Flows, "otlp-flows", FlowsRaw, "flows as OTLP log records: raw (one per flow), aggregated (one per edge and --otlp-aggregation-interval) or off")
	fs.DurationVar(&c.AggregationInterval, "otlp-aggregation-interval", DefaultAggregationInterval, "interval of --otlp-flows=aggregated")
	fs.IntVar(&c.MaxEdges, "otlp-max-edges", DefaultMaxEdges, "edges kept per aggregation interval; flows of further edges are dropped and counted")
	fs.DurationVar(&c.MetricsInterval, "otlp-metrics-interval", DefaultMetricsInterval, "how often the /metrics registry is exported as OTLP metrics; 0 exports none")
	fs.IntVar(&c.QueueSize, "otlp-queue-size", DefaultQueueSize, "flows queued for export; when full, new flows are dropped and counted (loupe_otlp_flows_dropped_total)")
	fs.IntVar(&c.BatchSize, "otlp-batch-size", DefaultBatchSize, "log records per export request")
	fs.DurationVar(&c.BatchTimeout, "otlp-batch-timeout", DefaultBatchTimeout, "longest a record waits for its batch to fill")
	fs.DurationVar(&c.RetryMaxElapsed, "otlp-retry-max-elapsed", DefaultRetryMaxElapsed, "how long a failed batch is retried, with exponential backoff, before its flows are dropped and counted")
}

// Enabled reports whether an endpoint was given.
func (c *Config) Enabled() bool { return c.Endpoint != "" }

// Validate checks the settings and fills defaults; call it at start so a
// bad flag stops the program before it does anything.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		if c.Insecure || c.CAFile != "" || c.ClientCertFile != "" || c.ClientKeyFile != "" || len(c.Headers) > 0 {
			return errors.New("the --otlp-* flags need --otlp-endpoint HOST:PORT")
		}
		return nil
	}
	if strings.Contains(c.Endpoint, "://") {
		return fmt.Errorf("--otlp-endpoint %q: give HOST:PORT, without a scheme (TLS unless --otlp-insecure)", c.Endpoint)
	}
	host, port, err := net.SplitHostPort(c.Endpoint)
	if err != nil {
		return fmt.Errorf("--otlp-endpoint %q: want HOST:PORT: %w", c.Endpoint, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("--otlp-endpoint %q: port %q is not a number in 1..65535", c.Endpoint, port)
	}
	if host == "" {
		return fmt.Errorf("--otlp-endpoint %q: no host", c.Endpoint)
	}
	if c.Insecure && (c.CAFile != "" || c.ClientCertFile != "" || c.ClientKeyFile != "" || c.ServerName != "") {
		return errors.New("--otlp-insecure sends plain text: the --otlp-ca-file, --otlp-client-*-file and --otlp-server-name flags need TLS")
	}
	if (c.ClientCertFile == "") != (c.ClientKeyFile == "") {
		return errors.New("--otlp-client-cert-file and --otlp-client-key-file go together")
	}
	for _, h := range c.Headers {
		if k, _, ok := strings.Cut(h, "="); !ok || k == "" {
			return fmt.Errorf("--otlp-header %q: want key=value", h)
		}
	}
	switch c.Flows {
	case "":
		c.Flows = FlowsRaw
	case FlowsRaw, FlowsAggregated, FlowsOff:
	default:
		return fmt.Errorf("--otlp-flows %q: want raw, aggregated or off", c.Flows)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"--otlp-aggregation-interval", &c.AggregationInterval, DefaultAggregationInterval},
		{"--otlp-batch-timeout", &c.BatchTimeout, DefaultBatchTimeout},
		{"--otlp-retry-max-elapsed", &c.RetryMaxElapsed, DefaultRetryMaxElapsed},
		{"timeout", &c.Timeout, DefaultTimeout}} {
		if *d.v < 0 {
			return fmt.Errorf("%s must not be negative", d.name)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.MetricsInterval < 0 {
		return errors.New("--otlp-metrics-interval must not be negative")
	}
	for _, n := range []struct {
		name string
		v    *int
		def  int
	}{{"--otlp-queue-size", &c.QueueSize, DefaultQueueSize}, {"--otlp-batch-size", &c.BatchSize, DefaultBatchSize},
		{"--otlp-max-edges", &c.MaxEdges, DefaultMaxEdges}} {
		if *n.v < 0 {
			return fmt.Errorf("%s must not be negative", n.name)
		}
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	if c.retryBase == 0 {
		c.retryBase = 100 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// credentials returns the transport credentials: plain text only when
// asked for by name, else TLS from files re-read when they change (a
// rotated Secret applies at the next connection).
func (c *Config) credentials() (credentials.TransportCredentials, error) {
	if c.Insecure {
		return insecure.NewCredentials(), nil
	}
	f := tlsreload.Files{Cert: c.ClientCertFile, Key: c.ClientKeyFile}
	if c.CAFile != "" {
		f.CAs = []string{c.CAFile}
	}
	cl, err := tlsreload.NewClient(f)
	if err != nil {
		return nil, fmt.Errorf("otlp tls: %w", err)
	}
	cl.MinVersion = MinTLSVersion
	return cl.Credentials(c.ServerName), nil
}

// Check validates the settings and loads the TLS files once, so that a
// bad flag or file stops the program at start.
func (c *Config) Check() error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Enabled() {
		if _, err := c.credentials(); err != nil {
			return fmt.Errorf("--otlp-ca-file, --otlp-client-cert-file, --otlp-client-key-file: %w", err)
		}
	}
	return nil
}
