package certs

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The Secrets WriteSecrets creates; install/kubernetes mounts them. Each
// holds tls.crt, tls.key and ca.crt (kubernetes.io/tls), except the CA's,
// which holds ca.crt and ca.key to issue more client certificates.
const (
	CASecret          = "loupe-ca"
	AgentSecret       = "loupe-agent-tls"
	RelaySecret       = "loupe-relay-server-tls"
	RelayClientSecret = "loupe-relay-client-tls"
	ClientSecret      = "loupe-client-tls"
)

func (s *Set) secrets(ns string) []*corev1.Secret {
	leaf := func(name string, p Pair) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/part-of": "loupe"}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: p.Cert, corev1.TLSPrivateKeyKey: p.Key, "ca.crt": s.CA.Cert},
		}
	}
	return []*corev1.Secret{
		leaf(AgentSecret, s.Agent),
		leaf(RelaySecret, s.Relay),
		leaf(RelayClientSecret, s.RelayClient),
		leaf(ClientSecret, s.Client),
		{
			ObjectMeta: metav1.ObjectMeta{Name: CASecret, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/part-of": "loupe"}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"ca.crt": s.CA.Cert, "ca.key": s.CA.Key},
		},
	}
}

// WriteSecrets stores the set as Secrets in namespace ns. When the CA
// Secret exists already and force is off, it writes nothing and reports
// false: a rerun of the install Job keeps the certificates in use. With
// force, every Secret is replaced (a rotation: the agents and the relay
// reload the mounted files without a restart).
func (s *Set) WriteSecrets(ctx context.Context, c kubernetes.Interface, ns string, force bool) (bool, error) {
	api := c.CoreV1().Secrets(ns)
	if !force {
		if _, err := api.Get(ctx, CASecret, metav1.GetOptions{}); err == nil {
			return false, nil
		} else if !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("get secret %s/%s: %w", ns, CASecret, err)
		}
	}
	// The CA goes last: its presence marks a complete set.
	for _, sec := range s.secrets(ns) {
		_, err := api.Create(ctx, sec, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			_, err = api.Update(ctx, sec, metav1.UpdateOptions{})
		}
		if err != nil {
			return false, fmt.Errorf("write secret %s/%s: %w", ns, sec.Name, err)
		}
	}
	return true, nil
}
