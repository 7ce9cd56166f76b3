// The key the login throttle counts a caller under, from the Muon-Client-Address header.

#include <catch2/catch.hpp>
#include <optional>
#include <string>

#include "auth_service.h"

using muon::auth::ThrottleClientKey;

TEST_CASE("auth: throttle client keys from the client address header", "[auth]") {
  CHECK(ThrottleClientKey("203.0.113.7") == "ip:203.0.113.7");
  CHECK(ThrottleClientKey("127.0.0.1") == "ip:127.0.0.1");
  // An IPv4 client seen on a dual-stack socket is the same client.
  CHECK(ThrottleClientKey("::ffff:203.0.113.7") == "ip:203.0.113.7");
  // IPv6: one host commonly holds a whole /64, so the /64 is the client.
  CHECK(ThrottleClientKey("2001:db8:1:2::1") == "ip6:2001:db8:1:2::/64");
  CHECK(ThrottleClientKey("2001:db8:1:2:ffff:eeee:dddd:cccc") == "ip6:2001:db8:1:2::/64");
  CHECK(ThrottleClientKey("2001:DB8:1:2::9") == "ip6:2001:db8:1:2::/64");
  CHECK(ThrottleClientKey("2001:db8:1:3::1") == "ip6:2001:db8:1:3::/64");
  CHECK(ThrottleClientKey("::1") == "ip6:::/64");

  // No header, or one that is not an address (only a bus caller can send that): "bus".
  CHECK(ThrottleClientKey(std::nullopt) == "bus");
  CHECK(ThrottleClientKey("") == "bus");
  CHECK(ThrottleClientKey("localhost") == "bus");
  CHECK(ThrottleClientKey("203.0.113.7, 10.0.0.1") == "bus");
  CHECK(ThrottleClientKey(" 203.0.113.7") == "bus");
  CHECK(ThrottleClientKey("fe80::1%eth0") == "bus");
  CHECK(ThrottleClientKey(std::string(200, '1')) == "bus");
  // Other spellings of one address are one key.
  CHECK(ThrottleClientKey("2001:0db8:0001:0002:0000:0000:0000:0001") == "ip6:2001:db8:1:2::/64");
}
