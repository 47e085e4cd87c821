#include "context.h"

#include <exception>
#include <string>
#include <string_view>

#include "pgjobq/errors.h"

namespace pgjobq {

std::string queue_label(std::string_view queue) {
  return "queue \"" + std::string(queue) + "\"";
}

void rethrow_with_context(const std::string& doing) {
  try {
    throw;
  } catch (const DatabaseError& e) {
    throw DatabaseError(doing + ": " + e.what(), e.sqlstate());
  } catch (const ConnectionError& e) {
    throw ConnectionError(doing + ": " + e.what());
  } catch (const InvalidInput& e) {
    throw InvalidInput(doing + ": " + e.what());
  } catch (const JobFailed& e) {
    throw JobFailed(doing + ": " + e.what(), e.state(), e.stored_error());
  } catch (const WrongState& e) {
    throw WrongState(doing + ": " + e.what(), e.state());
  } catch (const Timeout& e) {
    throw Timeout(doing + ": " + e.what());
  } catch (const NoSuchJob&) {
    throw;  // "no job with id N" already says it all
  } catch (const Error& e) {
    throw Error(doing + ": " + e.what());
  }
}

}  // namespace pgjobq
