package pattern_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/pattern"
)

// linear is the first of pats that matches img and that ok accepts, by
// testing each in turn: what an Index must answer.
func linear(pats []pattern.Pattern, img pattern.Image, ok func(int) bool) int {
	for i, p := range pats {
		if (ok == nil || ok(i)) && p.Match(img) {
			return i
		}
	}
	return -1
}

// manyRules are n image patterns as a large policy has them: one team's
// repositories each (with ** and with a single *), some pinned to tags,
// some by their last segment, a few that start with a wildcard (those an
// image is tested against in turn), and a catch-all last.
func manyRules(t testing.TB, n int, r *rand.Rand) []pattern.Pattern {
	t.Helper()
	var pats []pattern.Pattern
	for i := range n - 1 {
		var text string
		switch r.IntN(8) {
		case 0:
			text = fmt.Sprintf("lab/team-%d/*", r.IntN(n))
		case 1:
			text = fmt.Sprintf("lab/team-%d/app:v*", r.IntN(n))
		case 2:
			text = fmt.Sprintf("lab/**/svc-%d", r.IntN(n))
		case 3:
			text = fmt.Sprintf("lab/team-%d*/**", r.IntN(n))
		case 4:
			text = fmt.Sprintf("up-%d/**", r.IntN(16))
		default:
			text = fmt.Sprintf("lab/team-%d/**", i)
		}
		if r.IntN(1000) == 0 {
			text = fmt.Sprintf("*/team-%d/**", r.IntN(n))
		}
		pats = append(pats, mustParse(t, text))
	}
	return append(pats, mustParse(t, "**"))
}

func mustParse(t testing.TB, text string) pattern.Pattern {
	t.Helper()
	p, err := pattern.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// someImage is an image a pull of such a policy's registry may ask for.
func someImage(r *rand.Rand, n int) pattern.Image {
	names := []string{
		fmt.Sprintf("lab/team-%d/app", r.IntN(n)),
		fmt.Sprintf("lab/team-%d/deep/svc-%d", r.IntN(n), r.IntN(n)),
		fmt.Sprintf("lab/svc-%d", r.IntN(n)),
		fmt.Sprintf("up-%d/x/y", r.IntN(20)),
		"other/app", "lab", "lab/team-",
	}
	img := pattern.Image{Name: names[r.IntN(len(names))], Digest: "sha256:" + strings.Repeat("a", 64)}
	if r.IntN(2) == 0 {
		img.Tag = fmt.Sprintf("v%d", r.IntN(3))
	}
	return img
}

func TestIndexPicksTheSamePatternAsALinearScanOf10000Rules(t *testing.T) {
	const n = 10000
	r := rand.New(rand.NewPCG(1, 2))
	pats := manyRules(t, n, r)
	x := pattern.NewIndex(pats)
	filters := []struct {
		name string
		ok   func(int) bool
	}{
		{"every rule applies", nil},
		{"a third of the rules apply to another environment", func(i int) bool { return i%3 != 0 }},
	}
	for _, f := range filters {
		t.Run(f.name, func(t *testing.T) {
			for range 300 {
				img := someImage(r, n)
				if got, want := x.First(img, f.ok), linear(pats, img, f.ok); got != want {
					t.Fatalf("%+v: the index picks pattern %d, a linear scan %d (%s)", img, got, want, pats[max(want, 0)])
				}
			}
		})
	}
}

// FuzzIndexFirst: whatever the patterns (one a line) and the image, the
// index picks the pattern a linear scan picks, with and without a filter.
func FuzzIndexFirst(f *testing.F) {
	f.Add("lab/team-1/**\nlab/**\n**", "lab/team-1/app", "v1")
	f.Add("lab/a*b/**\nlab/ab/x\nlab/**/x", "lab/ab/x", "")
	f.Add("*/x\nlab/x:v*\nlab/x", "lab/x", "v2")
	f.Add("lab/app@sha256:"+strings.Repeat("a", 64)+"\nlab/app", "lab/app", "")
	f.Fuzz(func(t *testing.T, patterns, name, tag string) {
		var pats []pattern.Pattern
		for _, line := range strings.Split(patterns, "\n") {
			if p, err := pattern.Parse(line); err == nil {
				pats = append(pats, p)
			}
		}
		x := pattern.NewIndex(pats)
		img := pattern.Image{Name: name, Tag: tag, Digest: "sha256:" + strings.Repeat("a", 64)}
		for _, ok := range []func(int) bool{nil, func(i int) bool { return i%2 == 1 }} {
			if got, want := x.First(img, ok), linear(pats, img, ok); got != want {
				t.Fatalf("%+v against %q: the index picks %d, a linear scan %d", img, patterns, got, want)
			}
		}
	})
}

// BenchmarkIndexFirst: finding the rule of one image among 10 and 10,000
// rules; the cost must not grow with the rules.
func BenchmarkIndexFirst(b *testing.B) {
	for _, n := range []int{10, 10000} {
		r := rand.New(rand.NewPCG(3, 4))
		pats := manyRules(b, n, r)
		x := pattern.NewIndex(pats)
		imgs := make([]pattern.Image, 1024)
		for i := range imgs {
			imgs[i] = someImage(r, n)
		}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				x.First(imgs[i%len(imgs)], nil)
				i++
			}
		})
	}
}
