module github.com/flip-trust/node/services/fl-client

go 1.26.0

replace github.com/flip-trust/node/shared => ../../shared

require github.com/flip-trust/node/shared v0.0.0
