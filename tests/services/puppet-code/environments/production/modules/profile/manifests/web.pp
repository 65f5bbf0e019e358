# Test class with a parameter, so ENC class parameters are visible in the
# agent's output.
class profile::web (
  Integer $port = 80,
) {
  notify { "puppet-conductor: applied profile::web port=${port}": }
}
