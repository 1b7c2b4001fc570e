package yaml12

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestNorwayWordsStayStrings(t *testing.T) {
	j, err := ToJSON([]byte("metadata:\n  name: a\n  namespace: y\n  labels: {ns: n, on: off, 80: x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var p corev1.Pod
	if err := yaml.UnmarshalStrict(j, &p); err != nil {
		t.Fatal(err)
	}
	if p.Namespace != "y" || p.Labels["ns"] != "n" || p.Labels["on"] != "off" || p.Labels["80"] != "x" {
		t.Fatalf("got namespace %q labels %v", p.Namespace, p.Labels)
	}
}

// An integer and a float key that are one JSON string are an error, not a
// coin toss between their values.
func TestCollidingKeysAreRejected(t *testing.T) {
	for _, doc := range []string{"{1.0: a, 1: b}", "{2: a, 2e0: b, 3: c}"} {
		if j, err := ToJSON([]byte(doc)); err == nil {
			t.Errorf("%s: %s, want an error", doc, j)
		}
	}
	if j, err := ToJSON([]byte("{1: a, 2: b, '3': c}")); err != nil || string(j) != `{"1":"a","2":"b","3":"c"}` {
		t.Errorf("got %s, %v", j, err)
	}
}

// YAML 1.2 has no timestamp type: a date-like label value stays its text.
// An explicit tag still makes a timestamp.
func TestDatesStayStrings(t *testing.T) {
	j, err := ToJSON([]byte("since: 2024-01-01\nat: 2001-12-14 21:59:43.10\ntagged: !!timestamp 2024-01-01\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"at":"2001-12-14 21:59:43.10","since":"2024-01-01","tagged":"2024-01-01T00:00:00Z"}`
	if string(j) != want {
		t.Fatalf("got %s, want %s", j, want)
	}
}

// Characters encoding/json leaves raw but YAML reads differently are
// escaped, so the JSON reads back as the same value.
func TestJSONReadsBackAsYAML(t *testing.T) {
	want := `{"a":"nel\u0085 del\u007f bom\ufeff nonchar\uffff ok` + "\u00e9" + `"}`
	for _, in := range []string{`a: "nel\x85 del\x7f bom\ufeff nonchar\uffff ok\u00e9"`, want} {
		j, err := ToJSON([]byte(in))
		if err != nil || string(j) != want {
			t.Fatalf("%s: got %s, %v; want %s", in, j, err, want)
		}
	}
}

func TestToJSONOneDocument(t *testing.T) {
	if j, err := ToJSON([]byte("# nothing\n")); err != nil || string(j) != "null" {
		t.Errorf("empty document: %s, %v", j, err)
	}
	if _, err := ToJSON([]byte("a: 1\n---\nb: 2\n")); err != errManyDocuments {
		t.Errorf("two documents: %v", err)
	}
}

// FuzzToJSON: what ToJSON accepts becomes valid JSON, the same every time,
// that converts to itself (JSON is YAML 1.2). A JSON input keeps its meaning.
func FuzzToJSON(f *testing.F) {
	f.Add([]byte("a: y\nb: [1, 2.5, null, {c: d}]\n"))
	f.Add([]byte("? [a]\n: b\n"))
	f.Add([]byte("{80: x, on: off, 1.5: [1e3, -0, 0x1f, 0o17, .inf]}\n"))
	f.Add([]byte(`{"a": [1, 1.0, 1e2, -0, 18446744073709551615, "\u00e9\ud83d\ude00<&>"], "b": {"": null}}`))
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		j, err := ToJSON(b)
		if err != nil {
			return
		}
		if !json.Valid(j) {
			t.Fatalf("%q gave invalid JSON %q", b, j)
		}
		for range 8 { // map order is random: a key lost to another shows here
			if j2, err := ToJSON(b); err != nil || !bytes.Equal(j2, j) {
				t.Fatalf("%q gave %q, then %q (%v)", b, j, j2, err)
			}
		}
		if j2, err := ToJSON(j); err != nil || !bytes.Equal(j2, j) {
			t.Fatalf("%q gave %q, which converts to %q (%v)", b, j, j2, err)
		}
		var want, got any
		if json.Unmarshal(b, &want) == nil {
			if err := json.Unmarshal(j, &got); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("JSON %q became %q (%v)", b, j, err)
			}
		}
	})
}
