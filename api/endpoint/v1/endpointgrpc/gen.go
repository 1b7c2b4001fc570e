// Package endpointgrpc is the gRPC service of the endpoint API (package
// endpointv1 holds its messages): the agent serves it, tools call it.
// loupe-cni calls it without the gRPC library (cni/agentrpc.go).
package endpointgrpc

//go:generate protoc -I. -I.. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. --plugin=protoc-gen-go=../../../../bin/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=../../../../bin/tools/protoc-gen-go-grpc endpoint_service.proto
