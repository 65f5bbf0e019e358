# Test role: includes both profiles.
class role::webserver {
  include profile::base
  include profile::web
  notify { 'puppet-conductor: applied role::webserver': }
}
