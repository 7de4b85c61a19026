package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/proxy"
)

// connsServer serves h through the connection bounds, on loopback.
func connsServer(t *testing.T, h http.Handler, max, perClient int) (*httptest.Server, *proxy.Conns) {
	t.Helper()
	c := proxy.NewConns(max, perClient)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = c.Listener(srv.Listener)
	srv.Config.ConnState = c.ConnState
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, c
}

// idleFrom opens a keep-alive connection from the local address from, sends
// GET /v2/ once, reads the answer and then idles; nil when the connection
// was refused or cut.
func idleFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET /v2/ HTTP/1.1\r\nHost: proxy\r\n\r\n"); err != nil {
		return nil
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return c
}

// pullFrom GETs /v2/ on a new connection from the local address from.
func pullFrom(t *testing.T, from, url string) (int, error) {
	t.Helper()
	return getFrom(t, from, url+"/v2/")
}

// getFrom GETs url (a manifest, say) from the address from.
func getFrom(t *testing.T, from, url string) (int, error) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}).DialContext}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestOneClientsIdleConnectionsNeverKeepAnotherOut(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name           string
		max, perClient int
	}{
		{"the client holds its share of connections", 64, 16},
		{"the client holds every connection of the listener", 64, 64},
		{"the client opens 4096 connections against the default bounds", 4096, 512},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv, conns := connsServer(t, e.server, tt.max, tt.perClient)
			addr := srv.Listener.Addr().String()
			held := 0
			for range tt.max {
				if idleFrom(t, "127.0.0.2", addr) != nil {
					held++
				}
			}
			if held < tt.perClient {
				t.Fatalf("the greedy client holds %d connections, want its share %d", held, tt.perClient)
			}
			// Another client's pull is answered, not left in the backlog.
			code, err := pullFrom(t, "127.0.0.1", srv.URL)
			if err != nil || code != http.StatusOK {
				t.Fatalf("another client's pull: %d, %v", code, err)
			}
			for _, s := range conns.Shares() {
				if s.Party == "client" && s.InUse > float64(tt.perClient) {
					t.Errorf("one client holds %v connections, over its share %d", s.InUse, tt.perClient)
				}
			}
		})
	}
}

func TestAClientAtItsShareOfBusyConnectionsWaitsForOneOfItsOwn(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") != "" {
			<-release
		}
	})
	srv, _ := connsServer(t, h, 64, 2)
	for range 2 {
		go func() { _, _ = pullFrom(t, "127.0.0.2", srv.URL+"/?hold=1") }()
	}
	time.Sleep(200 * time.Millisecond) // both held
	got := make(chan int, 1)
	go func() {
		code, _ := pullFrom(t, "127.0.0.2", srv.URL)
		got <- code
	}()
	// Another client is not held up meanwhile.
	if code, err := pullFrom(t, "127.0.0.1", srv.URL); err != nil || code != http.StatusOK {
		t.Fatalf("another client: %d, %v", code, err)
	}
	select {
	case code := <-got:
		t.Fatalf("a third connection of a client at its share of 2 was served (%d) while its two were busy", code)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if code := <-got; code != http.StatusOK {
		t.Errorf("once one of its connections closed: %d", code)
	}
}

// A server shut down while every connection slot is taken stops: the
// listener's Accept returns once it is closed, whatever it waited for.
func TestShutdownEndsWhileEverySlotIsTaken(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release })
	c := proxy.NewConns(1, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnState: c.ConnState}
	go func() { _ = srv.Serve(c.Listener(ln)) }()
	busy := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		busy <- err
	}()
	for c.Shares()[0].InUse < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	// The one slot is busy; the listener now waits for a free one.
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(ctx) }()
	close(release)
	if err := <-busy; err != nil {
		t.Fatalf("the busy request: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown with every slot taken: %v", err)
		}
	case <-time.After(time.Minute):
		// Shutdown waits for Serve, whatever its context says.
		t.Fatal("shutdown never returned: Accept waits for a slot after Close")
	}
}
