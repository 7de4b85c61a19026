package kube

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// apiServer is an HTTPS server standing where the API server is, and a
// client of it with a token file.
func apiServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("the-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, tok, ca)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRecordPostsAnEventTheAPIServerDecodesStrictly(t *testing.T) {
	var got corev1.Event
	var path, auth string
	c := apiServer(t, func(w http.ResponseWriter, r *http.Request) {
		path, auth = r.Method+" "+r.URL.Path, r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			http.Error(w, `{"message":"`+err.Error()+`"}`, http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	err := c.Record(t.Context(), Event{
		Namespace: "authz-proxy",
		Object:    ObjectRef{APIVersion: "v1", Kind: "Pod", Namespace: "authz-proxy", Name: "authz-proxy-nodes-x7k2p", UID: "u-1"},
		Type:      "Warning", Reason: "CanaryNotEnforced", Message: "node worker-1: denied pull refused: NOT ENFORCED",
		Component: "authz-proxy-canary", Host: "worker-1", Time: at,
	})
	if err != nil {
		t.Fatal(err)
	}
	if path != "POST /api/v1/namespaces/authz-proxy/events" || auth != "Bearer the-token" {
		t.Errorf("%s with %q, want POST /api/v1/namespaces/authz-proxy/events with the token", path, auth)
	}
	if got.InvolvedObject.Kind != "Pod" || got.InvolvedObject.Name != "authz-proxy-nodes-x7k2p" || got.InvolvedObject.UID != "u-1" ||
		got.Type != corev1.EventTypeWarning || got.Reason != "CanaryNotEnforced" || got.Source.Host != "worker-1" ||
		got.Count != 1 || !got.LastTimestamp.Time.Equal(at) || got.GenerateName != "authz-proxy-nodes-x7k2p." || got.Namespace != "authz-proxy" {
		t.Errorf("the event as the API server reads it: %+v", got)
	}
}

func TestRecordSaysWhatTheAPIServerRefused(t *testing.T) {
	c := apiServer(t, func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"kind":"Status","message":"events is forbidden: User \"system:serviceaccount:x:y\" cannot create resource \"events\""}`, http.StatusForbidden)
	})
	err := c.Record(t.Context(), Event{Namespace: "x", Object: ObjectRef{Kind: "Pod", Name: "p"}, Type: "Warning", Reason: "R", Time: time.Now()})
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden: events is forbidden") {
		t.Errorf("error %v, want the API server's status and message", err)
	}
}

func TestLiveTellsAnObjectBeingDeletedFromOneThatStays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		live   bool
		err    string
	}{
		{"there", http.StatusOK, `{"metadata":{"name":"nodes"}}`, true, ""},
		{"being deleted", http.StatusOK, `{"metadata":{"name":"nodes","deletionTimestamp":"2026-12-01T10:00:00Z"}}`, false, ""},
		{"gone", http.StatusNotFound, `{"kind":"Status","message":"daemonsets.apps \"nodes\" not found"}`, false, ""},
		{"not allowed to ask", http.StatusForbidden, `{"message":"forbidden"}`, false, "403 Forbidden: forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := apiServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			})
			live, err := c.Live(t.Context(), "/apis/apps/v1/namespaces/authz-proxy/daemonsets/nodes")
			if live != tc.live || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("live %v, error %v; want %v, %q", live, err, tc.live, tc.err)
			}
		})
	}
}
