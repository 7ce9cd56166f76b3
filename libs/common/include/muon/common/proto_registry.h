#pragma once
// Looks up a service's methods from the compiled-in Protobuf descriptors, following the layout
// rule of proto/: service "github-events" lives in muon/github_events/v1/github_events.proto
// (package muon.github_events.v1) with exactly one `service` block. The ingress uses this to turn
// JSON into the right request message and the reply back into JSON.

#include <google/protobuf/descriptor.h>

#include <string>
#include <string_view>

namespace muon::proto {

// "github-events" -> "muon/github_events/v1/github_events.proto"
std::string ProtoFileFor(std::string_view service);

// The `service` block for a Muon service, or nullptr when no such file is linked in.
const google::protobuf::ServiceDescriptor* FindService(std::string_view service);

// The method, or nullptr when the service or the method does not exist.
const google::protobuf::MethodDescriptor* FindMethod(std::string_view service,
                                                     std::string_view method);

}  // namespace muon::proto
