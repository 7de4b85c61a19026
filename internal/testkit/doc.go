// Package testkit is what the tests of every authz-proxy package share:
// attestor keys written as PEM files, configurations written and loaded, the
// decision log read back through audit.Parse, a buffer that a server writes
// while a test reads, a clock that a test moves by hand, and a TUF
// repository served over HTTP. Only _test.go files import it; it imports
// nothing of authz-proxy but config, audit and sign (with what they
// import), so that any package's black-box tests can use it.
package testkit
