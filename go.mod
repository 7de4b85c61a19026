module github.com/authz-proxy/authz-proxy

go 1.26.8

require gopkg.in/yaml.v3 v3.0.1
