package install

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	loupecerts "github.com/loupe-project/loupe/certs"
	"github.com/loupe-project/loupe/internal/yaml12"
)

// The optional collector manifest decodes strictly, is not part of the
// default folder, and its receiver is mTLS against loupe's CA on the port
// its Service exposes.
func TestOTelCollectorManifest(t *testing.T) {
	b, err := os.ReadFile("kubernetes/otel-collector/otel-collector.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("otel-collector.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objects(t) {
		if n, ok := o.Obj.(interface{ GetName() string }); ok && n.GetName() == "loupe-otel-collector" {
			t.Fatal("the collector is in the default folder")
		}
	}
	cm := find[*corev1.ConfigMap](objs, "loupe-otel-collector")
	dep := find[*appsv1.Deployment](objs, "loupe-otel-collector")
	svc := find[*corev1.Service](objs, "loupe-otel-collector")
	if cm == nil || dep == nil || svc == nil {
		t.Fatal("want a ConfigMap, a Deployment and a Service named loupe-otel-collector")
	}
	var conf map[string]any
	for d, err := range yaml12.Documents([]byte(cm.Data["config.yaml"])) {
		if err != nil {
			t.Fatal(err)
		}
		if err := yamlJSON(d.JSON, &conf); err != nil {
			t.Fatal(err)
		}
	}
	grpc := dig(conf, "receivers", "otlp", "protocols", "grpc")
	tls, _ := grpc["tls"].(map[string]any)
	if !strings.HasSuffix(grpc["endpoint"].(string), ":4317") || tls["client_ca_file"] == nil || tls["cert_file"] == nil {
		t.Fatalf("receiver %v: want mTLS on 4317", grpc)
	}
	if svc.Spec.Ports[0].Port != 4317 {
		t.Errorf("service port %d", svc.Spec.Ports[0].Port)
	}
	var caSecret string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil && strings.HasPrefix(tls["client_ca_file"].(string), "/etc/otelcol/"+v.Name+"/") {
			caSecret = v.Secret.SecretName
		}
	}
	if caSecret != loupecerts.CASecret {
		t.Errorf("client CA from Secret %q, want %q (loupe's CA, which signs the relay's client certificate)", caSecret, loupecerts.CASecret)
	}
	for _, p := range []string{"logs", "metrics"} {
		if dig(conf, "service", "pipelines", p)["receivers"] == nil {
			t.Errorf("no %s pipeline", p)
		}
	}
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m, _ = m[k].(map[string]any)
	}
	return m
}

func yamlJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
