package k8s

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	loupepolicy "github.com/loupe-project/loupe/policy"
)

// TestPrivilegedAPIServerNetworkPolicyValidation creates every policy of
// policy/testdata/validation (the table of policy.ValidateNetworkPolicy's
// unit test) on a real kube-apiserver: it must admit exactly the valid
// ones and refuse the others on exactly the expected fields, and loupe's
// validator must agree with it on each. It needs no privilege; the prefix
// keeps a run of etcd and the API server out of quick test runs.
func TestPrivilegedAPIServerNetworkPolicyValidation(t *testing.T) {
	files, err := filepath.Glob("../../policy/testdata/validation/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no validation cases: %v", err)
	}
	_, cs := startAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, line := range strings.Split(string(b), "\n") {
			if w, ok := strings.CutPrefix(line, "# want: "); ok && w != "valid" {
				want = append(want, w)
			}
		}
		slices.Sort(want)
		np := &networkingv1.NetworkPolicy{}
		if err := yaml.UnmarshalStrict(b, np); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		var mine []string
		for _, e := range loupepolicy.ValidateNetworkPolicy(np) {
			mine = append(mine, e.Field)
		}
		slices.Sort(mine)
		mine = slices.Compact(mine)

		_, err = cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
		var theirs []string
		switch {
		case err == nil:
		case apierrors.IsInvalid(err):
			for _, c := range err.(apierrors.APIStatus).Status().Details.Causes {
				theirs = append(theirs, c.Field)
			}
			slices.Sort(theirs)
			theirs = slices.Compact(theirs)
		default:
			t.Fatalf("%s: create: %v", name, err)
		}
		if !slices.Equal(theirs, want) {
			t.Errorf("%s: the API server refused fields %q, the table says %q (%v)", name, theirs, want, err)
		}
		if !slices.Equal(mine, theirs) {
			t.Errorf("%s: loupe refuses fields %q, the API server %q (%v)", name, mine, theirs, err)
		}
	}
}
