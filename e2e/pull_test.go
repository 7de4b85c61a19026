//go:build e2e

package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// proxyRef names repo:tag or repo@digest through the main proxy, under the
// lab upstream.
func proxyRef(ref string) string { return lab.main.addr + "/lab/" + ref }

func at(repo string, d v1.Hash) string { return repo + "@" + d.String() }

// cranePull pulls ref through the main proxy into a tarball.
func cranePull(t *testing.T, ref string) (string, error) {
	t.Helper()
	return crane(t, "pull", "--insecure", proxyRef(ref), filepath.Join(t.TempDir(), "image.tar"))
}

// wantPulled pulls ref through the main proxy and asserts it was allowed.
func wantPulled(t *testing.T, ref string, digest v1.Hash, reference string) decision {
	t.Helper()
	p := lab.main
	mark := p.mark()
	out, err := cranePull(t, ref)
	mustSucceed(t, "crane pull "+proxyRef(ref), out, err)
	return p.decisionFor(t, mark, digest.String(), reference)
}

// wantDenied pulls ref through the main proxy with crane and asserts the
// pull failed with DENIED, naming the image, the digest, the rule and the
// reasons of the logged deny.
func wantDenied(t *testing.T, ref, image string, digest v1.Hash, reference string) decision {
	t.Helper()
	p := lab.main
	mark := p.mark()
	out, err := cranePull(t, ref)
	out = mustFail(t, "crane pull "+proxyRef(ref), out, err)
	d := p.decisionFor(t, mark, digest.String(), reference)
	checkDecision(t, d, "deny", image, "")
	wantContains(t, "crane pull "+proxyRef(ref), out, "DENIED", fmt.Sprintf("%s@%s denied by rule %q: ", image, digest, d.Rule))
	for _, r := range d.Reasons {
		wantContains(t, "crane pull "+proxyRef(ref), out, r)
	}
	if len(d.VerifiedBy) != 0 {
		t.Errorf("a denied image lists verifiedBy %v:\n%s", d.Attestors(), d)
	}
	return d
}

func wantVerifiedByCI(t *testing.T, d decision) {
	t.Helper()
	if !slices.Contains(d.Attestors(), "ci") {
		t.Errorf("verifiedBy does not name attestor ci:\n%s", d)
	}
}

func TestSignedImageIsPulled(t *testing.T) {
	img := lab.img.signed
	t.Run("crane by tag", func(t *testing.T) {
		d := wantPulled(t, "e2e/app:signed", img, "signed")
		checkDecision(t, d, "allow", "lab/e2e/app", "e2e")
		wantVerifiedByCI(t, d)
		if d.Enforcement != "enforce" {
			t.Errorf("enforcement %q, want enforce:\n%s", d.Enforcement, d)
		}
	})
	t.Run("crane by digest", func(t *testing.T) {
		d := wantPulled(t, at("e2e/app", img), img, img.String())
		checkDecision(t, d, "allow", "lab/e2e/app", "e2e")
		wantVerifiedByCI(t, d)
	})
	t.Run("skopeo through a registries.conf remap", func(t *testing.T) {
		p := lab.main
		mark := p.mark()
		dst := filepath.Join(t.TempDir(), "out")
		out, err := skopeo(t, p, "copy", "docker://lab.example/e2e/app:signed", "oci:"+dst+":signed")
		mustSucceed(t, "skopeo copy docker://lab.example/e2e/app:signed", out, err)
		d := p.decisionFor(t, mark, img.String(), "signed")
		checkDecision(t, d, "allow", "lab/e2e/app", "e2e")
		wantVerifiedByCI(t, d)
		if _, err := os.Stat(filepath.Join(dst, "index.json")); err != nil {
			t.Errorf("skopeo wrote no OCI layout: %v\n%s", err, out)
		}
	})
}

func TestUnsignedImageIsDenied(t *testing.T) {
	img := lab.img.unsigned
	t.Run("crane", func(t *testing.T) {
		d := wantDenied(t, "e2e/app:unsigned", "lab/e2e/app", img, "unsigned")
		checkDecision(t, d, "deny", "lab/e2e/app", "e2e")
	})
	t.Run("skopeo through a registries.conf remap", func(t *testing.T) {
		p := lab.main
		mark := p.mark()
		dst := filepath.Join(t.TempDir(), "out")
		out, err := skopeo(t, p, "copy", "docker://lab.example/e2e/app:unsigned", "oci:"+dst+":unsigned")
		out = mustFail(t, "skopeo copy docker://lab.example/e2e/app:unsigned", out, err)
		d := p.decisionFor(t, mark, img.String(), "unsigned")
		checkDecision(t, d, "deny", "lab/e2e/app", "e2e")
		// containers/image renders the DENIED code as "denied: <message>".
		if !strings.Contains(strings.ToUpper(out), "DENIED: LAB/E2E/APP@"+strings.ToUpper(img.String())) {
			t.Errorf("skopeo output does not carry the DENIED error for lab/e2e/app@%s:\n%s", img, out)
		}
		// logrus quotes the message: undo its escaping of quotes.
		wantContains(t, "skopeo copy", strings.ReplaceAll(out, `\"`, `"`), `denied by rule "e2e"`, d.Reasons[0])
	})
	t.Run("OCI error body", func(t *testing.T) {
		r := getManifest(t, "GET", lab.main.url()+"/v2/lab/e2e/app/manifests/unsigned")
		e := wantOCIError(t, "GET lab/e2e/app:unsigned", r, 403, "DENIED")
		prefix := fmt.Sprintf("lab/e2e/app@%s denied by rule \"e2e\": ", img)
		if msg := e.Errors[0].Message; !strings.HasPrefix(msg, prefix) || len(msg) == len(prefix) {
			t.Errorf("message %q, want %q followed by the reason", msg, prefix)
		}
	})
}

func TestRogueSignedImageIsDenied(t *testing.T) {
	d := wantDenied(t, "e2e/app:rogue", "lab/e2e/app", lab.img.rogue, "rogue")
	checkDecision(t, d, "deny", "lab/e2e/app", "e2e")
}

func TestSignatureCopiedFromAnotherImageIsDenied(t *testing.T) {
	// Sanity: the .sig tag of copied holds a signature (of signed).
	out, err := lab.tool(t.Context(), nil, "crane", "manifest", "--insecure", lab.reg+"/e2e/app:"+sigTag(lab.img.copied))
	mustSucceed(t, "crane manifest of the copied signature", out, err)

	d := wantDenied(t, "e2e/app:copied", "lab/e2e/app", lab.img.copied, "copied")
	checkDecision(t, d, "deny", "lab/e2e/app", "e2e")
	if reasons := strings.Join(d.Reasons, "; "); !strings.Contains(reasons, lab.img.signed.String()) {
		t.Errorf("the reasons do not say the signature was made for another digest (%s):\n%s", lab.img.signed, d)
	}
}

func TestReferrersModeSignedImageIsPulled(t *testing.T) {
	// Sanity: distribution has no referrers API, so cosign stored the
	// sha256-<hex> referrers-tag fallback index and no .sig tag.
	out, err := lab.tool(t.Context(), nil, "crane", "ls", "--insecure", lab.reg+"/e2e/referrer")
	mustSucceed(t, "crane ls e2e/referrer", out, err)
	fallback := lab.img.referrer.Algorithm + "-" + lab.img.referrer.Hex
	if tags := strings.Fields(out); !slices.Contains(tags, fallback) || slices.Contains(tags, fallback+".sig") {
		t.Fatalf("cosign --registry-referrers-mode=oci-1-1 did not store the fallback tag %s alone; tags:\n%s", fallback, out)
	}

	d := wantPulled(t, "e2e/referrer:signed", lab.img.referrer, "signed")
	checkDecision(t, d, "allow", "lab/e2e/referrer", "e2e")
	wantVerifiedByCI(t, d)
}

func TestSignedIndexAndItsImagesArePulled(t *testing.T) {
	p := lab.main
	mark := p.mark()
	dst := filepath.Join(t.TempDir(), "multiarch")
	out, err := skopeo(t, p, "copy", "--all", "docker://lab.example/e2e/multiarch:v1", "oci:"+dst+":v1")
	mustSucceed(t, "skopeo copy --all docker://lab.example/e2e/multiarch:v1", out, err)
	d := p.decisionFor(t, mark, lab.img.index.String(), "v1")
	checkDecision(t, d, "allow", "lab/e2e/multiarch", "e2e")
	wantVerifiedByCI(t, d)
	for _, child := range lab.img.children {
		d := p.decisionFor(t, mark, child.String(), child.String())
		checkDecision(t, d, "allow", "lab/e2e/multiarch", "e2e")
	}
	// And crane, asking for each child by digest after the index.
	for _, child := range lab.img.children {
		d := wantPulled(t, at("e2e/multiarch", child), child, child.String())
		checkDecision(t, d, "allow", "lab/e2e/multiarch", "e2e")
	}
}

func TestImageOfUnsignedIndexAskedForAloneIsDenied(t *testing.T) {
	child := lab.img.badChildren[0]
	d := wantDenied(t, at("e2e/multiarch", child), "lab/e2e/multiarch", child, child.String())
	checkDecision(t, d, "deny", "lab/e2e/multiarch", "e2e")
	reasons := strings.Join(d.Reasons, "; ")
	if !strings.Contains(reasons, "index") || !strings.Contains(reasons, "--recursive") {
		t.Errorf("the denial of a platform image does not mention its index and cosign sign --recursive:\n%s", d)
	}
}

func TestSignatureArtifactsAreReadableThroughTheProxy(t *testing.T) {
	t.Run("cosign verify, .sig tag", func(t *testing.T) {
		ref := proxyRef(at("e2e/app", lab.img.signed))
		out, err := lab.tool(t.Context(), nil, "cosign", "verify", "--key", lab.ciPub, "--insecure-ignore-tlog",
			"--allow-http-registry", "--trusted-root", lab.trustedRoot, ref)
		mustSucceed(t, "cosign verify "+ref, out, err)
		wantContains(t, "cosign verify", out, "The signatures were verified against the specified public key")
		wantOffline(t, out)
	})
	t.Run("cosign verify, referrers fallback tag", func(t *testing.T) {
		ref := proxyRef(at("e2e/referrer", lab.img.referrer))
		out, err := lab.tool(t.Context(), []string{"COSIGN_EXPERIMENTAL=1"}, "cosign", "verify", "--key", lab.ciPub, "--insecure-ignore-tlog",
			"--allow-http-registry", "--trusted-root", lab.trustedRoot, "--experimental-oci11", ref)
		mustSucceed(t, "cosign verify --experimental-oci11 "+ref, out, err)
		wantContains(t, "cosign verify", out, "The signatures were verified against the specified public key")
		wantOffline(t, out)
	})
	t.Run("crane manifest of the .sig tag", func(t *testing.T) {
		p := lab.main
		mark := p.mark()
		tag := sigTag(lab.img.signed)
		got, err := crane(t, "manifest", "--insecure", proxyRef("e2e/app:"+tag))
		mustSucceed(t, "crane manifest "+proxyRef("e2e/app:"+tag), got, err)
		want, err := crane(t, "manifest", "--insecure", lab.reg+"/e2e/app:"+tag)
		mustSucceed(t, "crane manifest of the upstream", want, err)
		if got != want {
			t.Errorf("the proxy served other bytes for %s:\n got: %s\nwant: %s", tag, got, want)
		}
		for _, d := range p.decisionsSince(t, mark) {
			if d.Reference == tag && d.Decision != "allow" {
				t.Errorf("a signature artifact served was logged as %q:\n%s", d.Decision, d)
			}
		}
	})
}

// wantOffline asserts cosign did not try to reach the Sigstore TUF CDN.
func wantOffline(t *testing.T, out string) {
	t.Helper()
	if strings.Contains(out, "TUF") || strings.Contains(out, "sigstore.dev") {
		t.Errorf("cosign tried to reach the network:\n%s", out)
	}
}

func TestRunnableImageUnderSignatureTagIsJudged(t *testing.T) {
	tag := sigTag(lab.img.trojanBase)
	for _, c := range []struct {
		name, repo string
		digest     v1.Hash
	}{
		{"OCI image with subject", "e2e/trojan", lab.img.trojanOCI},
		{"Docker image with subject", "e2e/trojan2", lab.img.trojanDock},
	} {
		// Sanity: upstream, it is a runnable image with a subject under
		// a cosign signature tag.
		m, err := crane(t, "manifest", "--insecure", lab.reg+"/"+c.repo+":"+tag)
		mustSucceed(t, "crane manifest of the upstream", m, err)
		if !strings.Contains(m, `"subject"`) || !strings.Contains(m, "tar.gzip") && !strings.Contains(m, "tar+gzip") {
			t.Fatalf("%s:%s upstream is not a runnable image with a subject:\n%s", c.repo, tag, m)
		}
		t.Run(c.name+" by .sig tag", func(t *testing.T) {
			d := wantDenied(t, c.repo+":"+tag, "lab/"+c.repo, c.digest, tag)
			checkDecision(t, d, "deny", "lab/"+c.repo, "e2e")
		})
		t.Run(c.name+" by digest", func(t *testing.T) {
			d := wantDenied(t, at(c.repo, c.digest), "lab/"+c.repo, c.digest, c.digest.String())
			checkDecision(t, d, "deny", "lab/"+c.repo, "e2e")
		})
	}
}

func TestAllowlistedImageIsPulled(t *testing.T) {
	d := wantPulled(t, "tools/debug:latest", lab.img.tool, "latest")
	checkDecision(t, d, "allow", "lab/tools/debug", "")
	if d.Rule == "e2e" {
		t.Errorf("an allowlisted image was decided by rule e2e:\n%s", d)
	}
}

func TestImageMatchingNoRuleIsDenied(t *testing.T) {
	d := wantDenied(t, "misc/app:v1", "lab/misc/app", lab.img.misc, "v1")
	checkDecision(t, d, "deny", "lab/misc/app", "")
	if d.Rule == "e2e" {
		t.Errorf("an image outside lab/e2e/** was decided by rule e2e:\n%s", d)
	}
}

// TestDisguisedImageIsRefusedToRuntimes pulls a runnable image labelled as
// no image layer, with a subject, under a cosign signature tag: podman and
// CRI-O's containers/image unpacks such a layer by its content, so the
// proxy must judge it like any image.
func TestDisguisedImageIsRefusedToRuntimes(t *testing.T) {
	tag := sigTag(lab.img.trojanBase)
	storage := func(t *testing.T) (ref, root string) {
		dir := t.TempDir()
		root = filepath.Join(dir, "root")
		return fmt.Sprintf("containers-storage:[vfs@%s+%s]", root, filepath.Join(dir, "run")), root
	}
	t.Run("straight from the upstream, skopeo unpacks it", func(t *testing.T) {
		dst, root := storage(t)
		out, err := lab.tool(t.Context(), nil, "skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
			"docker://"+lab.reg+"/e2e/disguised:"+tag, dst+"e2e/disguised:direct")
		mustSucceed(t, "skopeo copy from the upstream into containers-storage", out, err)
		found, _ := filepath.Glob(filepath.Join(root, "vfs", "dir", "*", payloadFile))
		if len(found) == 0 {
			t.Fatalf("containers-storage holds no unpacked %s: the test does not show the threat\n%s", payloadFile, out)
		}
	})
	t.Run("skopeo into containers-storage through the proxy", func(t *testing.T) {
		p := lab.main
		mark := p.mark()
		dst, root := storage(t)
		out, err := skopeo(t, p, "copy", "docker://lab.example/e2e/disguised:"+tag, dst+"e2e/disguised:proxied")
		out = mustFail(t, "skopeo copy of a disguised image through the proxy", out, err)
		wantContains(t, "skopeo copy of a disguised image", out, "denied")
		if found, _ := filepath.Glob(filepath.Join(root, "vfs", "dir", "*", payloadFile)); len(found) > 0 {
			t.Errorf("the payload reached containers-storage through the proxy: %v", found)
		}
		d := p.decisionFor(t, mark, lab.img.disguised.String(), tag)
		checkDecision(t, d, "deny", "lab/e2e/disguised", "e2e")
	})
	t.Run("crane by tag and by digest", func(t *testing.T) {
		wantDenied(t, "e2e/disguised:"+tag, "lab/e2e/disguised", lab.img.disguised, tag)
		wantDenied(t, at("e2e/disguised", lab.img.disguised), "lab/e2e/disguised", lab.img.disguised, lab.img.disguised.String())
	})
}
