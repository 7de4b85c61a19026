package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/authz-proxy/authz-proxy/internal/demo"
)

func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flags("demo", stderr)
	keep := fs.Bool("keep", false, "keep serving after the tour, for trying crane and skopeo by hand")
	if err := parse(fs, args); err != nil {
		return err
	}
	lab, err := demo.Start(ctx)
	if err != nil {
		return fmt.Errorf("demo: starting the sample registry: %w", err)
	}
	defer lab.Close()
	l, err := load(lab.ConfigPath)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	// The tour reads the store's counters from the metrics.
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return err
	}
	decisions := &heldWriter{}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- serve(sctx, lab.ConfigPath, l, serveEnv{ln: ln, metricsLn: metricsLn, stdout: decisions, logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()

	fmt.Fprintf(stdout, "Upstream registry (in process): %s, with sample images under lab/\n", lab.Upstream)
	fmt.Fprintf(stdout, "Proxy: http://%s, policy: %s\n\n", addr, lab.ConfigPath)
	lab.Tour(ctx, addr, stdout)
	lab.StoreTour(ctx, addr, metricsLn.Addr().String(), stdout)
	fmt.Fprintf(stdout, "\nDecision log (one JSON line per manifest decision, hash-chained by seq and prev; checkpoint lines mark where the proxy started and stopped):\n")
	if !*keep {
		stop()
		err := <-done
		decisions.release(stdout)
		return err
	}
	decisions.release(stdout)
	fmt.Fprintf(stdout, `
The proxy keeps serving until you press Ctrl-C. Try, from another shell:
  crane manifest --insecure %[1]s/lab/demo/app:signed
  crane manifest --insecure %[1]s/lab/demo/app:unsigned
  skopeo inspect --tls-verify=false docker://%[1]s/lab/demo/multiarch:v1
New decisions follow.
`, addr)
	return <-done
}

// heldWriter keeps what is written until release, then writes through: the
// tour's table is printed whole before the decisions it caused.
type heldWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out io.Writer
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.out != nil {
		return h.out.Write(p)
	}
	return h.buf.Write(p)
}

func (h *heldWriter) release(out io.Writer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, _ = out.Write(h.buf.Bytes())
	h.buf.Reset()
	h.out = out
}
