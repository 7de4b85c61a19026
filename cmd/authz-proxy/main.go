// Command authz-proxy is an OCI registry pull-through proxy that enforces
// signature and attestation policy at pull time. Its commands: serve, demo,
// check, validate, replay, revalidate, audit verify, report, trust fetch
// and status, node-config, canary, credential-provider and version. This
// package parses flags, loads the configuration and wires the internal
// packages together (with reload on SIGHUP or a changed file, and graceful
// shutdown); the judging, the verifying and the serving live in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `authz-proxy: an OCI pull-through proxy that enforces signature policy

Usage:
  authz-proxy serve    --config FILE [--watch 5s]
                                            run the proxy; reload on SIGHUP and when
                                            the configuration or a file it names changes
  authz-proxy demo     [--keep]             self-contained tour, no network needed
  authz-proxy check    --config FILE [--output text|json] [--environment NAME] IMAGE...
                                            judge images without serving;
                                            exit 0 all allowed, 1 any denied, 2 error
  authz-proxy validate --config FILE        load and check a configuration
  authz-proxy replay   --config FILE --log DECISIONS.jsonl [--output text|json] [--all]
                                            judge the digests of past pulls under the
                                            configuration, show the decisions that change;
                                            exit 0 none, 1 some change, 2 error
  authz-proxy revalidate --config FILE [--since 24h] [--log FILE...] [--output text|json|log]
                                            judge the digests allowed since then again under
                                            the configuration, evidence read anew; list those
                                            denied now (revoked); exit 0 none, 1 some, 2 error
  authz-proxy audit verify --log FILE|DIR... [--key PUB[@FROM..UNTIL]]... [--output text|json]
                                            check the decision logs' hash chains (one per
                                            replica), runs and signed checkpoints;
                                            exit 0 intact, 1 altered, 2 error
  authz-proxy report   --log FILE|DIR... [--since D] [--until T] [--output text|json|html] [--out FILE]
                                            denials, dryrun-denies, breakglass uses, errors
                                            and clients of the decision logs
  authz-proxy credential-provider [--registry HOST]...
                                            the kubelet's image credential provider: the pod's
                                            service-account token as the password for the proxy
  authz-proxy node-config --runtime containerd|cri-o --out DIR --server URL (--upstream NAME... | --config FILE)
                       [--ca FILE] [--client-cert FILE --client-key FILE] [--remove] [--keep --daemonset NAME]
                                            write the files that send a node's runtime to the
                                            proxy and nowhere else (or remove them)
  authz-proxy canary   --cri ENDPOINT --allowed IMAGE --denied IMAGE [--runtime R --hosts DIR --server URL]
                       [--every D --metrics ADDR --node NAME]
                                            pull through the node's runtime: is the proxy enforcing here?
                                            exit 0 enforced, 1 not, 2 error
  authz-proxy trust fetch [--config FILE] --root NAME --out DIR
                                            write a verified snapshot of a TUF trust root
                                            (public-good without --config) for a proxy
                                            without network: its cache, or mirror file://DIR
  authz-proxy trust status --config FILE [--output text|json] [--offline]
                                            each trust root's source, version, expiry
                                            and what it trusts
  authz-proxy version
`

// exitError carries an exit code through run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// usageErr is a bad command line: exit 2.
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		code := 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if ee == nil || ee.err != nil {
			fmt.Fprintln(os.Stderr, "authz-proxy:", err)
		}
		os.Exit(code)
	}
}

// run executes one command line. Errors other than *exitError exit 2.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: errors.New("no command given")}
	}
	switch args[0] {
	case "serve":
		return serveCmd(ctx, args[1:], stdout, stderr)
	case "demo":
		return demoCmd(ctx, args[1:], stdout, stderr)
	case "check":
		return checkCmd(ctx, args[1:], stdout, stderr)
	case "validate":
		return validateCmd(args[1:], stdout, stderr)
	case "replay":
		return replayCmd(ctx, args[1:], stdout, stderr)
	case "revalidate":
		return revalidateCmd(ctx, args[1:], stdout, stderr, time.Now())
	case "audit":
		return auditCmd(args[1:], stdout, stderr)
	case "trust":
		return trustCmd(ctx, args[1:], stdout, stderr)
	case "report":
		return reportCmd(args[1:], stdout, stderr, time.Now())
	case "credential-provider":
		return credentialProviderCmd(args[1:], os.Stdin, stdout, stderr, time.Now())
	case "node-config":
		return nodeConfigCmd(ctx, args[1:], stdout, stderr)
	case "canary":
		return canaryCmd(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "authz-proxy", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageErr("unknown command %q", args[0])
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
