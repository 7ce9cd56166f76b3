#include "muon/common/errors.h"

#include "muon/common/json_writer.h"

namespace muon {

std::string_view StatusText(int code) {
  switch (code) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

common::v1::Error ToProto(const Error& error, std::string_view id) {
  common::v1::Error proto;
  proto.set_id(std::string(id));
  proto.set_code(error.code());
  proto.set_detail(error.detail());
  proto.set_status(std::string(error.status()));
  return proto;
}

Error FromProto(const common::v1::Error& proto) {
  return Error(proto.code() == 0 ? 500 : proto.code(), proto.detail());
}

std::string ErrorJson(const common::v1::Error& proto) {
  JsonWriter w;
  w.BeginObject()
      .Key("id")
      .String(proto.id())
      .Key("code")
      .Int(proto.code())
      .Key("detail")
      .String(proto.detail())
      .Key("status")
      .String(proto.status())
      .EndObject();
  return w.Take();
}

}  // namespace muon
