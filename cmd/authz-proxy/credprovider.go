package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/credprovider"
)

// credentialProviderCmd is the kubelet's image credential provider: a
// CredentialProviderRequest on stdin, its response on stdout. Exit 1 when
// the request cannot be answered (the reason on stderr, which the kubelet
// logs).
func credentialProviderCmd(args []string, stdin io.Reader, stdout, stderr io.Writer, now time.Time) error {
	fs := flag.NewFlagSet("credential-provider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var registries listFlag
	fs.Var(&registries, "registry", "a host[:port] of the proxy the token is for (repeatable); none: the image's own host")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("credential-provider takes no arguments, got %q", fs.Args())
	}
	body, err := io.ReadAll(io.LimitReader(stdin, 1<<20+1))
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("credential-provider: reading the request: %w", err)}
	}
	out, err := credprovider.Respond(body, now, credprovider.Options{Registries: registries})
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("credential-provider: %w", err)}
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}
