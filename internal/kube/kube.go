// Package kube is the little of the Kubernetes API the node agent and the
// canary use, from inside a pod: whether an object still exists (or is
// being deleted), and recording an Event. It speaks JSON over HTTPS with
// the pod's service-account token; client-go would bring most of
// Kubernetes' own dependencies into the binary for these two calls.
package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServiceAccountDir is where the kubelet mounts a pod's token and the
// cluster's CA.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Client calls one API server.
type Client struct {
	base      string // https://host:port
	tokenFile string // read at each call: bound tokens are rotated
	http      *http.Client
}

// InCluster is the client of a pod: the API server named by
// KUBERNETES_SERVICE_HOST and _PORT, the token and CA in saDir.
func InCluster(saDir string) (*Client, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
	}
	ca, err := os.ReadFile(filepath.Join(saDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	return New("https://"+net.JoinHostPort(host, port), filepath.Join(saDir, "token"), ca)
}

// New is a client of the API server at base (https://host:port) that
// trusts the PEM certificates in ca and authenticates with the token in
// tokenFile.
func New(base, tokenFile string, ca []byte) (*Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("the API server's CA holds no PEM certificate")
	}
	tr := &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}
	return &Client{base: strings.TrimSuffix(base, "/"), tokenFile: tokenFile, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	tok, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.http.Do(req)
}

// StatusError is the API server's answer to a call that failed.
type StatusError struct {
	Method, Path, Status, Message string
	Code                          int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Message)
}

func apiError(method, path string, resp *http.Response) error {
	var st struct {
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(b, &st)
	if st.Message == "" {
		st.Message = strings.TrimSpace(string(b))
	}
	return &StatusError{Method: method, Path: path, Status: resp.Status, Message: st.Message, Code: resp.StatusCode}
}

// Live reports whether the object at path (such as
// /apis/apps/v1/namespaces/NS/daemonsets/NAME) exists and is not being
// deleted.
func (c *Client) Live(ctx context.Context, path string) (bool, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		var obj struct {
			Metadata struct {
				DeletionTimestamp *time.Time `json:"deletionTimestamp"`
			} `json:"metadata"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&obj); err != nil {
			return false, fmt.Errorf("GET %s: %w", path, err)
		}
		return obj.Metadata.DeletionTimestamp == nil, nil
	case http.StatusNotFound:
		return false, nil
	default:
		return false, apiError(http.MethodGet, path, resp)
	}
}

// ObjectRef names the object an Event is about.
type ObjectRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	UID        string `json:"uid,omitempty"`
}

// Event is what `kubectl get events` and `kubectl describe` show.
type Event struct {
	// Namespace is where the Event is recorded: the involved object's.
	Namespace string
	Object    ObjectRef
	// Type is Normal or Warning; Reason one CamelCase word.
	Type, Reason, Message string
	// Component and Host say who reports it: the reporter and its node.
	Component, Host string
	Time            time.Time
}

// event is a core/v1 Event as the API takes it.
type event struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		GenerateName string `json:"generateName"`
		Namespace    string `json:"namespace"`
	} `json:"metadata"`
	InvolvedObject ObjectRef `json:"involvedObject"`
	Reason         string    `json:"reason"`
	Message        string    `json:"message"`
	Type           string    `json:"type"`
	Source         struct {
		Component string `json:"component"`
		Host      string `json:"host,omitempty"`
	} `json:"source"`
	FirstTimestamp     time.Time `json:"firstTimestamp"`
	LastTimestamp      time.Time `json:"lastTimestamp"`
	Count              int32     `json:"count"`
	ReportingComponent string    `json:"reportingComponent"`
	ReportingInstance  string    `json:"reportingInstance,omitempty"`
}

// Record creates the Event.
func (c *Client) Record(ctx context.Context, e Event) error {
	var ev event
	ev.APIVersion, ev.Kind = "v1", "Event"
	ev.Metadata.GenerateName = e.Object.Name + "."
	ev.Metadata.Namespace = e.Namespace
	ev.InvolvedObject = e.Object
	ev.Reason, ev.Message, ev.Type = e.Reason, e.Message, e.Type
	ev.Source.Component, ev.Source.Host = e.Component, e.Host
	t := e.Time.UTC().Truncate(time.Second)
	ev.FirstTimestamp, ev.LastTimestamp, ev.Count = t, t, 1
	ev.ReportingComponent, ev.ReportingInstance = e.Component, e.Host
	path := "/api/v1/namespaces/" + url.PathEscape(e.Namespace) + "/events"
	resp, err := c.do(ctx, http.MethodPost, path, ev)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return apiError(http.MethodPost, path, resp)
	}
	return nil
}
