package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkHandler measures the whole in-process handler on the paths a
// runtime takes, against an in-process upstream registry. The cold path
// verifies a new digest each iteration.
func BenchmarkHandler(b *testing.B) {
	e := newEnv(b, withoutReferrersAPI())
	d := e.push("signed/app:v1")
	e.signTag("signed/app", "ci", d, d)
	h := e.server
	serve := func(b *testing.B, method, path string) {
		req := httptest.NewRequest(method, path, nil)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
		}
	}
	serve(b, http.MethodGet, "/v2/lab/signed/app/manifests/v1") // warm the verdict

	b.Run("GET by digest, cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, http.MethodGet, "/v2/lab/signed/app/manifests/"+d.String())
		}
	})
	b.Run("GET by tag, cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, http.MethodGet, "/v2/lab/signed/app/manifests/v1")
		}
	})
	b.Run("HEAD by tag, cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			serve(b, http.MethodHead, "/v2/lab/signed/app/manifests/v1")
		}
	})
	b.Run("GET by digest, cold", func(b *testing.B) {
		digests := make([]string, b.N)
		for i := range digests {
			d := e.push("signed/app:cold")
			e.signTag("signed/app", "ci", d, d)
			digests[i] = d.String()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			serve(b, http.MethodGet, "/v2/lab/signed/app/manifests/"+digests[i])
		}
	})
}

// BenchmarkCachedPullWithClients is the cached GET by digest without
// clients, and with them for a user (a password) and a service account (a
// token): a verified credential is cached by its hash, so the
// authentication adds a hash and a lookup.
func BenchmarkCachedPullWithClients(b *testing.B) {
	e := newClientsEnv(b)
	d := e.signed("signed/app:v1")
	sa := "Bearer " + e.k8s.Token(b, "system:serviceaccount:prod:api", "authz-proxy", time.Time{}, time.Now().Add(time.Hour), nil)
	open := e.push("open/app:v1")
	h := e.proxy.Config.Handler
	for _, bb := range []struct{ name, auth, path string }{
		{"anonymous image, no credential", "", "/v2/lab/open/app/manifests/" + open.String()},
		{"user", basicAuth("ci", "ci-password"), "/v2/lab/signed/app/manifests/" + d.String()},
		{"service-account token", sa, "/v2/lab/signed/app/manifests/" + d.String()},
	} {
		req := httptest.NewRequest(http.MethodGet, bb.path, nil)
		if bb.auth != "" {
			req.Header.Set("Authorization", bb.auth)
		}
		serve := func() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", bb.name, rec.Code, rec.Body)
			}
		}
		serve() // verify the credential and the image once
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
		})
	}
}
