package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authz-proxy/authz-proxy/internal/testkit"
)

// layerOf returns the first layer of the manifest at path, read through
// the proxy.
func (in *instance) layerOf(path string) string {
	in.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+in.addr+path, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := plainClient.Do(req)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		in.t.Fatalf("manifest %s: %d, %v", path, resp.StatusCode, err)
	}
	return m.Layers[0].Digest
}

// blob reads a blob through the proxy whole and returns the status.
func (in *instance) blob(repo, digest string) int {
	in.t.Helper()
	resp, err := plainClient.Get("http://" + in.addr + "/v2/lab/" + repo + "/blobs/" + digest)
	if err != nil {
		in.t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		in.t.Fatalf("blob %s: %v", digest, err)
	}
	return resp.StatusCode
}

func TestServeWithAFilesystemStoreServesTheSecondPullFromIt(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	base := labConfig(lab, signedPolicy) + "store: {driver: filesystem, rootdirectory: cache, maxSize: 1GiB}\n"
	in := startServe(t, dir, base, 0)
	layer := in.layerOf("/v2/lab/demo/app/manifests/signed")
	for range 2 {
		if status := in.blob("demo/app", layer); status != 200 {
			t.Fatalf("blob: %d", status)
		}
		in.waitMetric("authz_proxy_store_fills_in_flight", nil, 0)
	}
	in.waitMetric("authz_proxy_store_requests_total", map[string]string{"result": "hit"}, 1)
	in.waitMetric("authz_proxy_store_requests_total", map[string]string{"result": "miss"}, 1)
	hex := strings.TrimPrefix(layer, "sha256:")
	if _, err := os.Stat(filepath.Join(dir, "cache", "content", "lab", "blobs", "sha256", hex[:2], hex, "data")); err != nil {
		t.Errorf("the rootdirectory is not relative to the configuration's folder: %v", err)
	}

	testkit.WriteFile(t, in.config, strings.Replace(base, "maxSize: 1GiB", "maxSize: 2GiB", 1))
	in.hup <- os.Interrupt
	in.waitMetric("authz_proxy_config_reloads_total", map[string]string{"result": "failure"}, 1)
	in.waitLog("store: changed (driver, place, size or credential): this takes a restart")
}

func TestAnS3StoreThatIsDownServesFromTheUpstreamAndNeverLogsItsSecret(t *testing.T) {
	lab := startLab(t)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there
	const secret = "s3-secret-that-must-not-leak"
	testkit.WriteFile(t, filepath.Join(dir, "access"), "AKIADOWN\n")
	testkit.WriteFile(t, filepath.Join(dir, "secret"), secret+"\n")
	in := startServe(t, dir, labConfig(lab, signedPolicy)+fmt.Sprintf("store: {driver: s3, bucket: cache, regionendpoint: 'http://%s', forcepathstyle: true, accesskeyFile: access, secretkeyFile: secret, maxSize: 1GiB}\n", down), 0)
	layer := in.layerOf("/v2/lab/demo/app/manifests/signed")
	for range 3 {
		if status := in.blob("demo/app", layer); status != 200 {
			t.Fatalf("blob with the store down: %d", status)
		}
	}
	in.waitLog("store failing, serving from the upstream without it")
	if got, _ := metric(in.scrape(), "authz_proxy_store_requests_total", map[string]string{"result": "hit"}); got != 0 {
		t.Errorf("%v hits from a store that is down", got)
	}
	for _, text := range []string{in.logs.String(), in.decisions.String()} {
		if strings.Contains(text, secret) || strings.Contains(text, "AKIADOWN") {
			t.Fatalf("the S3 credential is in the logs:\n%s", text)
		}
	}
}
