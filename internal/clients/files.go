package clients

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4"
)

// readHtpasswd reads an htpasswd file of bcrypt entries (htpasswd -B):
// "user:$2y$...". Blank lines and lines starting with # are skipped; any
// other hash is refused, naming its line: MD5, SHA-1 and crypt(3) hashes
// are too cheap to guess.
func readHtpasswd(path string) (map[string][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseHtpasswd(path, data)
}

func parseHtpasswd(path string, data []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || user == "":
			return nil, fmt.Errorf("%s:%d: want user:hash", path, n)
		case !strings.HasPrefix(hash, "$2y$") && !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$"):
			return nil, fmt.Errorf("%s:%d: user %q: not a bcrypt hash; make the entry with htpasswd -B", path, n, user)
		case users[user] != nil:
			return nil, fmt.Errorf("%s:%d: user %q is listed twice", path, n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return users, nil
}

// readJWKS reads a JSON Web Key Set of public keys (as Kubernetes serves
// at /openid/v1/jwks).
func readJWKS(path string) (*oidc.StaticKeySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseJWKS(path, data)
}

func parseJWKS(path string, data []byte) (*oidc.StaticKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("%s: not a JSON Web Key Set: %v", path, err)
	}
	ks := &oidc.StaticKeySet{}
	for i, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() {
			return nil, fmt.Errorf("%s: key %d (%q) is not a valid public key", path, i, k.KeyID)
		}
		ks.PublicKeys = append(ks.PublicKeys, crypto.PublicKey(k.Key))
	}
	if len(ks.PublicKeys) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return ks, nil
}
