package audit_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// checkpointKey is an Ed25519 key written as `openssl genpkey -algorithm
// ed25519` does, parsed back as the proxy parses audit.checkpoint.keyFile.
func checkpointKey(t testing.TB) (crypto.Signer, crypto.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := audit.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err != nil {
		t.Fatal(err)
	}
	return signer, pub
}

func record(i int) audit.Record {
	d := audit.Allow
	if i%3 == 0 {
		d = audit.Deny
	}
	return audit.Record{Decision: d, Image: "lab/app", Reference: fmt.Sprintf("v%d", i), Digest: fmt.Sprintf("sha256:%064x", i),
		Upstream: "lab", Rule: "acme", Enforcement: "enforce", Reasons: []string{"no cosign signature found"}, Client: audit.Client{Addr: "10.0.0.1:4000"}}
}

// writeRotatedLog writes what a proxy with signed checkpoints writes over
// a day with one logrotate: records 1-20 with a checkpoint after the 10th,
// the file renamed to .1 (and gzipped, as logrotate's compress does) and
// reopened, records 21-30 with a checkpoint after the 25th, and a clean
// stop. It returns the rotated and the current file.
func writeRotatedLog(t *testing.T, key crypto.Signer) (rotated, current string) {
	t.Helper()
	dir := t.TempDir()
	current = filepath.Join(dir, "decisions.jsonl")
	l, err := audit.New(nil, current, audit.WithChain(), audit.WithCheckpoints(key, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	write := func(from, to, checkpointAfter int) {
		for i := from; i <= to; i++ {
			if err := l.Write(context.Background(), record(i)); err != nil {
				t.Fatal(err)
			}
			if i == checkpointAfter {
				if err := l.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	write(1, 20, 10)
	if err := os.Rename(current, current+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	write(21, 30, 25)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rotated = current + ".1.gz"
	gzipFile(t, current+".1", rotated)
	return rotated, current
}

// write writes recs to l; one that cannot be written fails the test.
func write(t testing.TB, l *audit.Log, recs ...audit.Record) {
	t.Helper()
	for _, r := range recs {
		if err := l.Write(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func gzipFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, testkit.Gzip(t, data), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Remove(from)
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(string(data), "\n")
	if ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

func writeLines(t *testing.T, path string, ls []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(ls, "")), 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestChainOfARotatedLogVerifiesAndEndsWhereTheProxyStopped(t *testing.T) {
	key, pub := checkpointKey(t)
	rotated, current := writeRotatedLog(t, key)
	// Given newest first, as a shell glob lists them: read oldest first.
	rep, err := audit.Verify([]string{current, rotated}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("a log as the proxy wrote it has problems: %v", rep.Problems)
	}
	if rep.Files[0].Name != rotated || rep.Files[0].Ends != audit.CheckpointReopen || rep.Files[1].Ends != audit.CheckpointShutdown {
		t.Errorf("files read as %+v; want the rotated file first, ending with the reopen checkpoint, and the current one ending with the shutdown checkpoint", rep.Files)
	}
	// start, 10th, reopen; 25th, shutdown
	if rep.Decisions != 30 || rep.Checkpoints != 5 || rep.Verified != 5 || !rep.Closed || rep.Tail != 0 {
		t.Errorf("decisions %d, checkpoints %d (verified %d), closed %v, tail %d; want 30, 5 (5), true, 0", rep.Decisions, rep.Checkpoints, rep.Verified, rep.Closed, rep.Tail)
	}
}

func TestChainContinuesWhenTheProxyRestartsOnTheSameFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	for run := range 2 {
		l, err := audit.New(nil, path, audit.WithChain())
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			write(t, l, record(run*5+i))
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := audit.Verify([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Notes) != 0 {
		t.Errorf("problems %v, notes %v; want none: the second run continues the first one's chain", rep.Problems, rep.Notes)
	}
	if rep.Files[0].FirstSeq != 1 || rep.Files[0].LastSeq != 14 { // 2 × (start + 5 + shutdown)
		t.Errorf("seq %d to %d, want 1 to 14", rep.Files[0].FirstSeq, rep.Files[0].LastSeq)
	}
}

// TestEditedLogIsCaughtAtTheRightLine edits a rotated, signed log in each
// way a person with write access could, and checks that verify names the
// line and what was done. The rotated file (gzipped) holds 24 lines: the
// start checkpoint, records 1-10, a checkpoint, records 11-20, the reopen
// checkpoint; the current file 12: records 21-25, a checkpoint, records
// 26-30, the shutdown checkpoint.
func TestEditedLogIsCaughtAtTheRightLine(t *testing.T) {
	key, pub := checkpointKey(t)
	for _, c := range []struct {
		name string
		edit func(t *testing.T, rotated, current []string) (newRotated, newCurrent []string)
		file string // "rotated" or "current"
		line int
		kind string
	}{
		{"a field changed", func(_ *testing.T, r, c []string) ([]string, []string) {
			c[2] = strings.Replace(c[2], `"decision":"allow"`, `"decision":"deny"`, 1) // record 23
			return r, c
		}, "current", 3, audit.ProblemChanged},
		{"a field changed in the gzipped file", func(_ *testing.T, r, c []string) ([]string, []string) {
			r[6] = strings.Replace(r[6], `"deny"`, `"allow"`, 1) // record 6
			return r, c
		}, "rotated", 7, audit.ProblemChanged},
		{"a line dropped", func(_ *testing.T, r, c []string) ([]string, []string) {
			return r, append(c[:1:1], c[2:]...) // record 22 gone: record 23 is now line 2
		}, "current", 2, audit.ProblemRemoved},
		{"a forged line inserted", func(_ *testing.T, r, c []string) ([]string, []string) {
			forged := strings.Replace(c[1], `"reference":"v22"`, `"reference":"v99"`, 1)
			return r, append(c[:2:2], append([]string{forged}, c[2:]...)...)
		}, "current", 3, audit.ProblemInserted},
		{"a copy of a line inserted", func(_ *testing.T, r, c []string) ([]string, []string) {
			return r, append(c[:4:4], append([]string{c[1]}, c[4:]...)...)
		}, "current", 5, audit.ProblemInserted},
		{"a line without a chain inserted", func(_ *testing.T, r, c []string) ([]string, []string) {
			plain := `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"decision","decision":"allow","image":"lab/app"}` + "\n"
			return r, append(c[:3:3], append([]string{plain}, c[3:]...)...)
		}, "current", 4, audit.ProblemInserted},
		{"two lines swapped", func(_ *testing.T, r, c []string) ([]string, []string) {
			c[1], c[2] = c[2], c[1]
			return r, c
		}, "current", 2, audit.ProblemReordered},
		{"a line moved earlier", func(_ *testing.T, r, c []string) ([]string, []string) {
			moved := c[4]
			return r, append(c[:1:1], append([]string{moved}, append(c[1:4:4], c[5:]...)...)...)
		}, "current", 2, audit.ProblemReordered},
		{"the current file cut mid-line", func(_ *testing.T, r, c []string) ([]string, []string) {
			last := len(c) - 1
			c[last] = c[last][:len(c[last])/2]
			return r, c
		}, "current", 12, audit.ProblemTruncated},
		{"the end of the rotated file cut off", func(_ *testing.T, r, c []string) ([]string, []string) {
			return r[:20], c
		}, "rotated", 20, audit.ProblemTruncated},
		{"a checkpoint changed", func(_ *testing.T, r, c []string) ([]string, []string) {
			c[5] = strings.Replace(c[5], `"reason":"interval"`, `"reason":"reopen"`, 1)
			return r, c
		}, "current", 6, audit.ProblemSignature},
		{"the rotated file's records rewritten with a new chain", func(t *testing.T, r, c []string) ([]string, []string) {
			// Whoever rewrites the lines can recompute the hashes, but
			// cannot sign the checkpoint that follows.
			return rechain(t, r, func(i int, line string) string {
				if i == 3 {
					return strings.Replace(line, `"deny"`, `"allow"`, 1)
				}
				return line
			}), c
		}, "rotated", 12, audit.ProblemSignature},
	} {
		t.Run(c.name, func(t *testing.T) {
			rotatedGz, current := writeRotatedLog(t, key)
			rotated := strings.TrimSuffix(rotatedGz, ".gz")
			zr, err := audit.Open(rotatedGz)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			zr.Close()
			if err != nil {
				t.Fatal(err)
			}
			testkit.WriteFile(t, rotated, string(plain))
			r, cu := c.edit(t, lines(t, rotated), lines(t, current))
			writeLines(t, rotated, r)
			writeLines(t, current, cu)
			gzipFile(t, rotated, rotatedGz)

			rep, err := audit.Verify([]string{rotatedGz, current}, keys(pub))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"rotated": rotatedGz, "current": current}[c.file]
			if len(rep.Problems) == 0 {
				t.Fatalf("verify found nothing; want %s at %s:%d", c.kind, want, c.line)
			}
			first := rep.Problems[0]
			if first.File != want || first.Line != c.line || first.Kind != c.kind {
				t.Errorf("first problem %v; want %s at %s:%d; all:\n%s", first, c.kind, want, c.line, findings(rep.Problems))
			}
		})
	}
}

// rechain rewrites lines with edit, recomputing seq and prev as a forger
// would, but leaving signatures as they were.
func rechain(t *testing.T, ls []string, edit func(i int, line string) string) []string {
	t.Helper()
	prev := ""
	out := make([]string, len(ls))
	for i, l := range ls {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		body := strings.TrimSuffix(l, "\n")
		cut := strings.Index(body, `,"seq":`)
		rest := body[cut:]
		sig := ""
		if j := strings.Index(rest, `,"signature":`); j >= 0 {
			sig = strings.TrimSuffix(rest[j:], "}")
		}
		line := edit(i, body[:cut]) + fmt.Sprintf(`,"seq":%v,"prev":%q`, m["seq"], prev) + sig + "}"
		out[i] = line + "\n"
		prev = hashOf(line)
	}
	return out
}

func hashOf(line string) string {
	sum := sha256.Sum256([]byte(line))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func findings(fs []audit.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + f.String() + "\n")
	}
	return b.String()
}

func TestCleanLogOfHundredThousandRecordsVerifies(t *testing.T) {
	key, pub := checkpointKey(t)
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := audit.New(nil, path, audit.WithChain(), audit.WithCheckpoints(key, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	var wg sync.WaitGroup
	for w := range 4 { // concurrent writers, as concurrent pulls are
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if err := l.Write(context.Background(), record(i)); err != nil {
					t.Error(err)
					return
				}
				if i%10_000 == 0 {
					if err := l.Checkpoint(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify([]string{path}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Decisions != n || !rep.Closed {
		t.Errorf("%d decisions, closed %v, problems:\n%s", rep.Decisions, rep.Closed, findings(rep.Problems))
	}
}

func TestVerifyNamesAKeyThatDidNotSign(t *testing.T) {
	key, _ := checkpointKey(t)
	_, other := checkpointKey(t)
	rotated, current := writeRotatedLog(t, key)
	rep, err := audit.Verify([]string{rotated, current}, keys(other))
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Kind != audit.ProblemSignature || !strings.Contains(rep.Problems[0].Message, "not one given with --key") {
		t.Errorf("problems:\n%s\nwant the first checkpoint reported as signed by another key", findings(rep.Problems))
	}
}

func TestChainAloneDetectsEditsWithoutAKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := audit.New(nil, path, audit.WithChain())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		write(t, l, record(i))
	}
	l.Close()
	ls := lines(t, path)
	if !strings.Contains(ls[0], `"reason":"start"`) || strings.Contains(ls[0], "signature") {
		t.Fatalf("first line %s; want an unsigned start checkpoint", ls[0])
	}
	ls[4] = strings.Replace(ls[4], `"lab/app"`, `"lab/other"`, 1)
	writeLines(t, path, ls)
	rep, err := audit.Verify([]string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Line != 5 || rep.Problems[0].Kind != audit.ProblemChanged {
		t.Errorf("problems:\n%s\nwant line 5 changed", findings(rep.Problems))
	}
}

func TestAFailingWriteIsReportedRefusedAndItsGapRecorded(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []audit.Option
	}{
		{"written by each request", nil},
		{"written by the queue's writer, each request waiting for its line", []audit.Option{audit.WithQueue(audit.DefaultQueue)}},
	} {
		t.Run(tt.name, func(t *testing.T) { failingWrite(t, tt.opts...) })
	}
}

func failingWrite(t *testing.T, opts ...audit.Option) {
	dir := t.TempDir()
	path := filepath.Join(dir, "decisions.jsonl")
	first := filepath.Join(dir, "first.jsonl")
	if err := os.Symlink(first, path); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var obs observer
	l, err := audit.New(nil, path, append(opts, audit.WithChain(), audit.WithRequired(), audit.WithObserver(&obs),
		audit.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(context.Background(), record(1)); err != nil {
		t.Fatal(err)
	}
	// The disk fills up: the file the proxy reopens cannot be written.
	os.Remove(path)
	if err := os.Symlink("/dev/full", path); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 4; i++ {
		if err := l.Write(context.Background(), record(i)); err == nil {
			t.Fatalf("writing record %d to a full disk succeeded", i)
		}
	}
	if err := l.Healthy(); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Healthy() = %v; want the write error", err)
	}
	if !strings.Contains(logs.String(), `"level":"ERROR","msg":"the decision log cannot be written; manifest requests are answered 503`) {
		t.Errorf("no error logged; the log says:\n%s", logs.String())
	}
	if obs.failed != 3 {
		t.Errorf("%d failed writes observed, want 3", obs.failed)
	}

	// Space again: a probe writes the resume checkpoint with the gap.
	second := filepath.Join(dir, "second.jsonl")
	os.Remove(path)
	if err := os.Symlink(second, path); err != nil {
		t.Fatal(err)
	}
	if err := l.Healthy(); err != nil {
		t.Fatalf("Healthy() = %v once the file can be written", err)
	}
	if err := l.Write(context.Background(), record(5)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	resume := lines(t, second)[0]
	if !strings.Contains(resume, `"reason":"resume","lost":3`) {
		t.Errorf("the first line after the failure is %s; want a resume checkpoint counting 3 lost lines", resume)
	}
	rep, err := audit.Verify([]string{first, second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0].Message, "3 line(s) were lost") {
		t.Errorf("problems:\n%snotes:\n%s\nwant none, and a note of the 3 lost lines", findings(rep.Problems), findings(rep.Notes))
	}
}

type observer struct {
	mu                    sync.Mutex
	ok, failed, cp, waits int
}

func (o *observer) AuditWrite(ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ok {
		o.ok++
	} else {
		o.failed++
	}
}

func (o *observer) AuditQueueFull() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waits++
}

func (o *observer) AuditCheckpoint(time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cp++
}

func TestCheckpointKeysOfEveryKindSignAndVerify(t *testing.T) {
	for _, c := range []struct {
		name  string
		pem   func() []byte
		error string
	}{
		{"Ed25519 PKCS #8", func() []byte {
			_, k, _ := ed25519.GenerateKey(rand.Reader)
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}, ""},
		{"ECDSA P-256 SEC 1", func() []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalECPrivateKey(k)
			return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
		}, ""},
		{"ECDSA P-384 PKCS #8", func() []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}, ""},
		{"ECDSA P-521 PKCS #8", func() []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
			der, _ := x509.MarshalPKCS8PrivateKey(k)
			return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}, ""},
		{"a public key", func() []byte {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalPKIXPublicKey(k.Public())
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		}, `PEM block "PUBLIC KEY"`},
		{"an encrypted key", func() []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})
		}, "unencrypted"},
		{"not PEM", func() []byte { return []byte("hello") }, "no PEM block"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key, err := audit.ParsePrivateKey(c.pem())
			if c.error != "" {
				if err == nil || !strings.Contains(err.Error(), c.error) {
					t.Fatalf("error %v, want one saying %q", err, c.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "d.jsonl")
			l, err := audit.New(nil, path, audit.WithChain(), audit.WithCheckpoints(key, time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			write(t, l, record(1))
			l.Close()
			rep, err := audit.Verify([]string{path}, keys(key.Public()))
			if err != nil {
				t.Fatal(err)
			}
			if !rep.OK() || rep.Verified != 2 {
				t.Errorf("%d checkpoints verified, problems:\n%s", rep.Verified, findings(rep.Problems))
			}
		})
	}
}

func TestEachOfSeveralEditsIsNamed(t *testing.T) {
	key, pub := checkpointKey(t)
	rotated, current := writeRotatedLog(t, key)
	c := lines(t, current)
	c[1] = strings.Replace(c[1], `"lab/app"`, `"lab/other"`, 1) // record 22
	c = append(c[:3:3], c[4:]...)                               // record 24 gone
	writeLines(t, current, c)
	rep, err := audit.Verify([]string{rotated, current}, keys(pub))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range rep.Problems {
		got = append(got, fmt.Sprintf("%d %s", p.Line, p.Kind))
	}
	if strings.Join(got, ", ") != "2 changed, 4 removed" {
		t.Errorf("problems:\n%swant line 2 changed and a line removed before line 4", findings(rep.Problems))
	}
}

func TestARotatedFileLeftOutIsCaughtWhereTheChainJumps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	l, err := audit.New(nil, path, audit.WithChain())
	if err != nil {
		t.Fatal(err)
	}
	for gen := 2; gen >= 1; gen-- { // decisions.jsonl.2, then .1, as logrotate numbers them
		for i := range 3 {
			write(t, l, record(i))
		}
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, gen)); err != nil {
			t.Fatal(err)
		}
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	write(t, l, record(9))
	l.Close()
	rep, err := audit.Verify([]string{path, path + ".2"}, nil) // .1 left out
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || rep.Problems[0].File != path || rep.Problems[0].Line != 1 || rep.Problems[0].Kind != audit.ProblemRemoved ||
		!strings.Contains(rep.Problems[0].Message, "a file between the two was not given") {
		t.Errorf("problems:\n%swant the lines of decisions.jsonl.1 missing before line 1 of decisions.jsonl", findings(rep.Problems))
	}
}

// keys are public keys given for any time, as `--key PUB` gives them.
func keys(pubs ...crypto.PublicKey) []audit.Key {
	out := make([]audit.Key, len(pubs))
	for i, p := range pubs {
		out[i] = audit.Key{Public: p}
	}
	return out
}
