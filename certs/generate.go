// Package certs issues loupe's TLS certificates: one CA, and from it the
// agents' server certificate, the relay's server and client certificates
// and a client certificate for the CLI. The names are Hubble's, so the stock
// hubble-relay and hubble CLI work with the same files.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// The names Hubble checks. One wildcard covers every agent
// (contract.TLSServerName gives each node's name under it).
const (
	AgentServerName  = "*.default.hubble-grpc.cilium.io"
	RelayServerName  = "*.hubble-relay.cilium.io"
	RelayClientCN    = "*.hubble-relay.cilium.io"
	DefaultCLIName   = "loupe-cli"
	DefaultValidity  = 365 * 24 * time.Hour
	caValidityFactor = 3
)

// Pair is a PEM certificate and its PEM (PKCS#8) key.
type Pair struct {
	Cert []byte
	Key  []byte
}

// Set is everything Generate issues.
type Set struct {
	CA          Pair
	Agent       Pair // server certificate of every agent's Observer API
	Relay       Pair // server certificate of the relay's listener
	RelayClient Pair // the relay's client certificate towards the agents
	Client      Pair // a CLI's client certificate towards the relay
}

// Options tunes Generate. Zero values take the defaults.
type Options struct {
	// Validity of the leaf certificates; the CA lives three times longer.
	Validity time.Duration
	// RelayNames are extra DNS names or IP addresses of the relay's server
	// certificate (its Service name, localhost, ...).
	RelayNames []string
	// ClientName is the CLI certificate's common name.
	ClientName string
	// Now is the issue time (tests); zero is time.Now.
	Now time.Time
}

// Generate issues a new CA and the certificates signed by it.
func Generate(o Options) (*Set, error) {
	if o.Validity <= 0 {
		o.Validity = DefaultValidity
	}
	if o.ClientName == "" {
		o.ClientName = DefaultCLIName
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "loupe CA"},
		NotBefore:             o.Now.Add(-time.Hour),
		NotAfter:              o.Now.Add(caValidityFactor * o.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	ca, caDER, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	s := &Set{}
	if s.CA, err = pair(caDER, caKey); err != nil {
		return nil, err
	}
	issue := func(cn string, names []string, usage ...x509.ExtKeyUsage) (Pair, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Pair{}, err
		}
		t := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			NotBefore:   o.Now.Add(-time.Hour),
			NotAfter:    o.Now.Add(o.Validity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: usage,
		}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				t.IPAddresses = append(t.IPAddresses, ip)
			} else {
				t.DNSNames = append(t.DNSNames, n)
			}
		}
		_, der, err := sign(t, ca, &key.PublicKey, caKey)
		if err != nil {
			return Pair{}, fmt.Errorf("%s: %w", cn, err)
		}
		return pair(der, key)
	}
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	if s.Agent, err = issue(AgentServerName, []string{AgentServerName}, server); err != nil {
		return nil, err
	}
	if s.Relay, err = issue(RelayServerName, append([]string{RelayServerName}, o.RelayNames...), server); err != nil {
		return nil, err
	}
	if s.RelayClient, err = issue(RelayClientCN, nil, client); err != nil {
		return nil, err
	}
	if s.Client, err = issue(o.ClientName, nil, client); err != nil {
		return nil, err
	}
	return s, nil
}

func sign(t, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	t.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, t, parent, pub, key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, der, err
}

func pair(der []byte, key *ecdsa.PrivateKey) (Pair, error) {
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}),
	}, nil
}

// errExists says a destination already holds certificates.
var errExists = errors.New("already exists")
