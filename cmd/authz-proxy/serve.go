package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
)

// shutdownGrace bounds how long in-flight requests may take to finish after
// SIGTERM.
const shutdownGrace = 15 * time.Second

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("serve", stderr)
	path := fs.String("config", "", "configuration file")
	if err := parse(fs, args); err != nil {
		return err
	}
	l, err := load(*path)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil))
	ln, err := net.Listen("tcp", l.cfg.Listen.Addr)
	if err != nil {
		return err
	}
	return serve(ctx, l, ln, stdout, logger)
}

// serve runs the proxy on ln until ctx ends, then drains.
func serve(ctx context.Context, l *loaded, ln net.Listener, stdout io.Writer, logger *slog.Logger) error {
	auditLog, err := audit.New(stdout, l.cfg.Path(l.cfg.Audit.File))
	if err != nil {
		return l.cfg.Errorf([]any{"audit", "file"}, "%v", err)
	}
	defer auditLog.Close()
	c := l.cfg
	handler, err := proxy.New(proxy.Options{
		Policy:          l.policy,
		Upstreams:       l.upstreams,
		DefaultUpstream: c.DefaultUpstream,
		MaxEntries:      c.Cache.MaxEntries,
		AllowTTL:        c.Cache.AllowTTL,
		DenyTTL:         c.Cache.DenyTTL,
		VerifyTimeout:   c.Limits.VerifyTimeout,
		Audit:           auditLog,
		Logger:          logger,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	scheme, serveFn := "http", func() error { return srv.Serve(ln) }
	if t := c.Listen.TLS; t != nil {
		tc, err := tlsConfig(c, t)
		if err != nil {
			return err
		}
		srv.TLSConfig = tc
		scheme, serveFn = "https", func() error { return srv.ServeTLS(ln, "", "") }
	}
	logger.Info("serving", "addr", scheme+"://"+ln.Addr().String(), "generation", c.Generation, "upstreams", len(l.upstreams), "rules", len(c.Policy.Rules))
	errc := make(chan error, 1)
	go func() { errc <- serveFn() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// tlsConfig builds the listener's TLS; with a client CA it requires and
// verifies client certificates (mTLS).
func tlsConfig(c *config.Config, t *config.TLS) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.Path(t.CertFile), c.Path(t.KeyFile))
	if err != nil {
		return nil, c.Errorf([]any{"listen", "tls"}, "%v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(c.Path(t.ClientCAFile))
		if err != nil {
			return nil, c.Errorf([]any{"listen", "tls", "clientCAFile"}, "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, c.Errorf([]any{"listen", "tls", "clientCAFile"}, "no PEM certificate found")
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
