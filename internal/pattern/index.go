package pattern

import (
	"slices"
)

// Index finds the first of many patterns that matches an image without
// testing each in turn: the patterns are kept by the literal start of the
// names they match (lab/team-42/ for lab/team-42/**), as path routers keep
// routes, and then by their literal end (/app for lab/**/app), so that an
// image is tested only against the patterns whose literal start and end
// it has. The first is by the order the patterns were given in. An Index
// is immutable and safe for concurrent use.
type Index struct {
	pats     []Pattern
	byPrefix map[string]*bucket
	// lengths are the lengths of the literal starts, ascending: an image
	// name is looked up by each of its prefixes of these lengths.
	lengths []int
}

// bucket holds the patterns of one literal start by their literal end
// (what follows their last *; "" for a pattern without one).
type bucket struct {
	bySuffix map[string][]int32 // positions, ascending
	lengths  []int              // of the literal ends, ascending
}

// NewIndex indexes pats, in that order.
func NewIndex(pats []Pattern) *Index {
	x := &Index{pats: pats, byPrefix: map[string]*bucket{}}
	for i, p := range pats {
		if p.name == nil {
			continue // the zero Pattern matches nothing
		}
		b := x.byPrefix[p.prefix]
		if b == nil {
			b = &bucket{bySuffix: map[string][]int32{}}
			x.byPrefix[p.prefix] = b
			x.lengths = append(x.lengths, len(p.prefix))
		}
		if _, ok := b.bySuffix[p.suffix]; !ok {
			b.lengths = append(b.lengths, len(p.suffix))
		}
		b.bySuffix[p.suffix] = append(b.bySuffix[p.suffix], int32(i))
	}
	slices.Sort(x.lengths)
	x.lengths = slices.Compact(x.lengths)
	for _, b := range x.byPrefix {
		slices.Sort(b.lengths)
		b.lengths = slices.Compact(b.lengths)
	}
	return x
}

// First returns the position of the first pattern that matches img and
// that ok (nil: any) accepts, and -1 when there is none: the same answer
// as testing every pattern in order.
func (x *Index) First(img Image, ok func(i int) bool) int {
	best := -1
	name := img.Name
	for _, n := range x.lengths {
		if n > len(name) {
			break
		}
		b := x.byPrefix[name[:n]]
		if b == nil {
			continue
		}
		for _, m := range b.lengths {
			if m > len(name) {
				break
			}
			for _, i := range b.bySuffix[name[len(name)-m:]] {
				if best >= 0 && int(i) >= best {
					break // the rest of this list comes later
				}
				if (ok == nil || ok(int(i))) && x.pats[i].Match(img) {
					best = int(i)
					break
				}
			}
		}
	}
	return best
}
