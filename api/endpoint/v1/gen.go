// Package endpointv1 is the CNI ↔ agent endpoint API.
package endpointv1

//go:generate protoc --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. --plugin=protoc-gen-go=../../../bin/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=../../../bin/tools/protoc-gen-go-grpc endpoint.proto
