package proxy

import (
	"github.com/authz-proxy/authz-proxy/internal/policy"
	"github.com/authz-proxy/authz-proxy/internal/source"
)

// WrapRegistry makes s judge through wrap(registry), so that tests can
// inject faults into what the judge reads.
func WrapRegistry(s *Server, wrap func(policy.Registry) policy.Registry) {
	inner := s.registry
	s.registry = func(src *source.Source) policy.Registry { return wrap(inner(src)) }
}
