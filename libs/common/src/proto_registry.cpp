#include "muon/common/proto_registry.h"

#include <google/protobuf/descriptor.pb.h>

#include <algorithm>

namespace muon::proto {

std::string ProtoFileFor(std::string_view service) {
  std::string package(service);
  std::replace(package.begin(), package.end(), '-', '_');
  return "muon/" + package + "/v1/" + package + ".proto";
}

const google::protobuf::ServiceDescriptor* FindService(std::string_view service) {
  const auto* file =
      google::protobuf::DescriptorPool::generated_pool()->FindFileByName(ProtoFileFor(service));
  if (file == nullptr || file->service_count() != 1) return nullptr;
  return file->service(0);
}

const google::protobuf::MethodDescriptor* FindMethod(std::string_view service,
                                                     std::string_view method) {
  const auto* svc = FindService(service);
  return svc == nullptr ? nullptr : svc->FindMethodByName(std::string(method));
}

}  // namespace muon::proto
