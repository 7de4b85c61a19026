package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"

	"github.com/authz-proxy/authz-proxy/internal/audit"
	"github.com/authz-proxy/authz-proxy/internal/clients"
)

// AccessRule is the rule name of decisions refused because the principal
// may not pull the image (clients.access), before any policy.
const AccessRule = "(access)"

// admit authenticates r and says whether its principal may take route rt,
// when the configuration has a clients section: every route needs a
// credential (the base /v2/ too, as registries answer, which makes
// clients log in), but for the anonymous images. A credential that does
// not authenticate costs its client a delay before the 401; an
// authenticated principal refused the image gets 403 DENIED, logged (a
// decision record for a manifest). It returns who r authenticated as, nil
// for nobody.
func (s *Server) admit(r *http.Request, st *state, rt route) (*clients.Principal, error) {
	c := st.clients
	if c == nil {
		return nil, nil
	}
	who, err := c.Authenticate(r.Context(), r)
	if err != nil {
		delay := c.FailureDelay(clientKey(r))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		s.log.Info("a client's credential does not authenticate", "client", r.RemoteAddr, "path", r.URL.Path, "err", errors.Unwrap(err))
		return nil, challenge("%v; authenticate as a user, with a token, or with a client certificate the proxy accepts", err)
	}
	if rt.kind == kindBase {
		if who == nil {
			return nil, challenge("authz-proxy needs a credential: log in (docker login, crane auth login, a kubelet credential provider)")
		}
		return who, nil
	}
	image := rt.upstream + "/" + rt.repo
	if c.MayPull(who, image) {
		return who, nil
	}
	if who == nil {
		return nil, challenge("%s needs a credential: it is not one of clients.anonymous", image)
	}
	msg := who.Name + " may not pull " + image + ": no entry of clients.access gives it"
	if rt.kind == kindManifest {
		rec := audit.Record{Decision: audit.Deny, Image: image, Reference: rt.ref.String(), Upstream: rt.upstream, Rule: AccessRule,
			Reasons: []string{msg}, Client: clientOf(r), Principal: who.Name}
		if err := s.record(r.Context(), rec); err != nil {
			return who, err
		}
	} else {
		s.log.Info("access refused", "principal", who.Name, "image", image, "kind", rt.kind, "client", r.RemoteAddr)
	}
	return who, &httpError{err: errcode.ErrorCodeDenied.WithMessage(msg).WithDetail(map[string]string{"image": image, "principal": who.Name})}
}

// challenge is a 401 that asks for a credential.
func challenge(format string, args ...any) *httpError {
	e := errorf(errcode.ErrorCodeUnauthorized, format, args...)
	e.challenge = true
	return e
}
