package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/config"
	"github.com/authz-proxy/authz-proxy/internal/metrics"
	"github.com/authz-proxy/authz-proxy/internal/proxy"
	"github.com/authz-proxy/authz-proxy/internal/revalidate"
)

// shutdownGrace bounds how long in-flight requests may take to finish after
// SIGTERM.
const shutdownGrace = 15 * time.Second

// defaultWatch is how often serve looks for a changed configuration.
const defaultWatch = 5 * time.Second

// serveFlags are serve's flags: the configuration file and how often to
// look for changes.
func serveFlags(stderr io.Writer) (fs *flag.FlagSet, path *string, watch *time.Duration) {
	fs = flags("serve", stderr)
	path = fs.String("config", "", "configuration file")
	watch = fs.Duration("watch", defaultWatch, "how often to look for a changed configuration or named file and reload it (0: on SIGHUP only)")
	return fs, path, watch
}

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, path, watch := serveFlags(stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErr("serve: unexpected argument %q", fs.Arg(0))
	}
	if *watch < 0 {
		return usageErr("serve: --watch %s: want a positive duration, or 0", *watch)
	}
	l, err := load(*path)
	if err != nil {
		return err
	}
	env := serveEnv{watch: *watch, stdout: stdout, logger: slog.New(slog.NewJSONHandler(stderr, nil))}
	if env.ln, err = net.Listen("tcp", l.cfg.Listen.Addr); err != nil {
		return l.cfg.Errorf([]any{"listen", "addr"}, "%v", err)
	}
	if m := l.cfg.Metrics; m != nil {
		if env.metricsLn, err = net.Listen("tcp", m.Addr); err != nil {
			env.ln.Close()
			return l.cfg.Errorf([]any{"metrics", "addr"}, "%v", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	env.reload = hup
	return serve(ctx, *path, l, env)
}

// serveEnv is what serve runs with besides its configuration.
type serveEnv struct {
	// ln is the proxy's listener; metricsLn, if not nil, serves /metrics,
	// /healthz and /readyz.
	ln, metricsLn net.Listener
	// reload receives SIGHUP: reopen the audit file, reload the
	// configuration.
	reload <-chan os.Signal
	// watch is how often to look for a changed configuration; 0: never.
	watch  time.Duration
	stdout io.Writer // the decision log
	logger *slog.Logger
}

// serve runs the proxy configured by l (loaded from path) until ctx ends,
// reloading on env.reload and on a change of the files it was loaded from,
// then drains in-flight requests for at most shutdownGrace.
func serve(ctx context.Context, path string, l *loaded, env serveEnv) error {
	logger := env.logger
	m := metrics.New()
	rv := revalidate.New(revalidate.Options{Observer: m, Logger: logger})
	auditLog, err := audit.New(env.stdout, l.cfg.Path(l.cfg.Audit.File), append(auditOptions(l, logger, m), audit.WithFollower(rv.Observe))...)
	if err != nil {
		return l.cfg.Errorf([]any{"audit", "file"}, "%v", err)
	}
	defer func() {
		if err := auditLog.Close(); err != nil {
			logger.Error("closing the audit file", "err", err.Error())
		}
	}()
	if why := auditLog.Unclean(); why != "" {
		m.ReadyNote("decision log", "started after a stop without its shutdown checkpoint: "+why)
	}
	m.WatchBudget(l.budget.Snapshot)
	if auditLog.Required() {
		m.AddReadinessCheck("decision log", auditLog.Healthy)
	}
	if cp := l.cfg.Audit.Checkpoint; cp != nil {
		m.AuditCheckpointInterval(cp.Every)
	}
	st, err := openStore(ctx, l.cfg, l.store, env.ln.Addr(), logger)
	if err != nil {
		return err
	}
	if st != nil {
		// After the server's shutdown: fills its clients left go on till then.
		defer st.Close()
		m.WatchStore(st.Stats)
	}
	if err := l.withSources(st, m, logger, nil); err != nil {
		return err
	}
	handler, err := proxy.New(proxyOptions(l, auditLog, logger, m))
	if err != nil {
		return err
	}
	m.WatchOutages(handler.Outages)
	r := &reloader{path: path, cur: l, fingerprint: fingerprint(path), proxy: handler, store: st, audit: auditLog, metrics: m, logger: logger, reloaded: make(chan struct{}, 1)}
	r.tried = r.fingerprint
	m.WatchTrust(func() []metrics.TrustRoot { return trustMetrics(r.current().trust.Status(time.Now())) })
	// A trust root that changes what it trusts is put in force by the
	// loop below, as a reload is.
	trustChanged := make(chan struct{}, 1)
	l.trustRoots.Observe(logger, func() {
		select {
		case trustChanged <- struct{}{}:
		default:
		}
	})
	defer l.trustRoots.Close()
	l.trustRoots.Use(l.trust)
	// Re-validation stops before the decision log closes.
	rvCtx, stopRevalidating := context.WithCancel(ctx)
	revalidated := make(chan struct{})
	go func() { defer close(revalidated); revalidating(rvCtx, r, rv, auditLog, r.reloaded) }()
	defer func() { stopRevalidating(); <-revalidated }()
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	scheme, serveFn := "http", func() error { return srv.Serve(env.ln) }
	if l.cfg.Listen.TLS != nil {
		tc, err := tlsConfig(l.cfg)
		if err != nil {
			return err
		}
		r.tls.Store(tc)
		// Each handshake takes the TLS settings in force: a reload renews
		// the certificate and the client CAs without a restart.
		srv.TLSConfig = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			NextProtos:         tc.NextProtos,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.tls.Load(), nil },
		}
		scheme, serveFn = "https", func() error { return srv.ServeTLS(env.ln, "", "") }
	}
	var metricsSrv *http.Server
	if env.metricsLn != nil {
		// The demo has a metrics listener without a metrics section.
		withPprof := l.cfg.Metrics != nil && l.cfg.Metrics.Pprof
		metricsSrv = &http.Server{Handler: metricsHandler(m, withPprof), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metricsSrv.Serve(env.metricsLn) }()
		logger.Info("metrics", "addr", "http://"+env.metricsLn.Addr().String()+"/metrics")
	}
	m.ConfigLoaded(l.cfg.Generation, false)
	logWarnings(logger, l)
	logger.Info("serving", "addr", scheme+"://"+env.ln.Addr().String(), "generation", l.cfg.Generation, "upstreams", len(l.upstreams), "rules", len(l.cfg.Policy.Rules), "watch", env.watch.String())
	// Past the connection limit, idle connections are closed first and
	// further clients wait in the listen backlog rather than each costing
	// a goroutine and buffers; one client holds at most its share.
	conns := proxy.NewConns(l.cfg.Limits.MaxConnections, l.cfg.Limits.MaxConnectionsPerClient)
	m.WatchShares(conns.Shares)
	m.WatchAuditQueue(auditLog.QueueStats)
	srv.ConnState = conns.ConnState
	env.ln = conns.Listener(env.ln)
	errc := make(chan error, 1)
	go func() { errc <- serveFn() }()
	m.SetReady(true)

	var tick <-chan time.Time
	if env.watch > 0 {
		t := time.NewTicker(env.watch)
		defer t.Stop()
		tick = t.C
	}
	for done := false; !done; {
		select {
		case err := <-errc:
			m.SetReady(false)
			if metricsSrv != nil {
				_ = metricsSrv.Close()
			}
			return err
		case <-env.reload:
			if err := auditLog.Reopen(); err != nil {
				logger.Error("reopening the audit file; decisions still go to the old one", "file", auditLog.Path(), "err", err.Error())
			}
			r.reload("SIGHUP")
			// And the TUF roots are asked for news, without holding up
			// the loop.
			tm := r.cur.trustRoots
			go func() {
				if err := tm.Refresh(ctx); err != nil {
					logger.Warn("trust roots: refresh on SIGHUP failed; the last verified roots stay", "err", err.Error())
				}
			}()
		case <-trustChanged:
			r.trustChanged()
		case <-tick:
			if fp := fingerprint(path); fp != r.tried && fp != r.fingerprint {
				r.reload("file changed")
			}
		case <-ctx.Done():
			done = true
		}
	}
	m.SetReady(false)
	logger.Info("shutting down", "grace", shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// metricsHandler serves the metrics listener: m's /metrics, /healthz and
// /readyz and, with withPprof (metrics.pprof), Go's profiler under
// /debug/pprof/.
func metricsHandler(m *metrics.Metrics, withPprof bool) http.Handler {
	if !withPprof {
		return m.Handler()
	}
	mux := http.NewServeMux()
	mux.Handle("/", m.Handler())
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// proxyOptions are the proxy's options for configuration l, whose
// sources are built.
func proxyOptions(l *loaded, a *audit.Log, logger *slog.Logger, m *metrics.Metrics) proxy.Options {
	c := l.cfg
	o := proxy.Options{
		Policy:          l.policy,
		DefaultUpstream: c.DefaultUpstream,
		MaxEntries:      c.Cache.MaxEntries,
		Budget:          l.budget,
		Limits:          c.Limits,
		Audit:           a,
		Logger:          logger,
		Metrics:         m,
		Clients:         l.clients,
	}
	for _, u := range l.upstreams {
		o.Sources = append(o.Sources, l.sources[u.Name()])
	}
	return o
}

// auditOptions are the decision log's options for configuration l.
func auditOptions(l *loaded, logger *slog.Logger, m *metrics.Metrics) []audit.Option {
	a := l.cfg.Audit
	// No request waits on the disk: the writer writes what is queued.
	opts := []audit.Option{audit.WithLogger(logger), audit.WithObserver(m), audit.WithDefaultLogID(defaultLogID(l.checkpointKeyID)), audit.WithQueue(audit.DefaultQueue)}
	if a.LogID != "" {
		opts = append(opts, audit.WithLogID(a.LogID))
	}
	if a.Chained() {
		opts = append(opts, audit.WithChain())
	}
	if l.checkpointKey != nil {
		opts = append(opts, audit.WithCheckpoints(l.checkpointKey, a.Checkpoint.Every))
	}
	if a.Required {
		opts = append(opts, audit.WithRequired())
	}
	return opts
}

// defaultLogID names a log without audit.logId: the host name (the pod's
// name in Kubernetes) and, with a checkpoint key, the first 8 hex digits of
// its ID, so that replicas of deployments that share host names but not
// keys differ. The log keeps it once written (see audit.WithDefaultLogID).
func defaultLogID(keyID string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "authz-proxy"
	}
	if hex, ok := strings.CutPrefix(keyID, "sha256:"); ok && len(hex) >= 8 {
		return host + "-" + hex[:8]
	}
	return host
}

func logWarnings(logger *slog.Logger, l *loaded) {
	for _, w := range slices.Concat(l.cfg.Warnings, l.trust.Warnings, l.policy.Warnings) {
		logger.Warn("configuration", "warning", w)
	}
	if l.cfg.Clients == nil {
		logger.Warn("configuration", "warning", l.cfg.File+": clients is not set: anyone who reaches the proxy pulls whatever the upstreams' credentials can read (see clients in config.example.yaml)")
	}
}

// tlsConfig builds the listener's TLS; with a client CA it requires and
// verifies client certificates (mTLS).
func tlsConfig(c *config.Config) (*tls.Config, error) {
	t := c.Listen.TLS
	cert, err := tls.LoadX509KeyPair(c.Path(t.CertFile), c.Path(t.KeyFile))
	if err != nil {
		return nil, c.Errorf([]any{"listen", "tls"}, "%v", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
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
