# Test class: its notify proves the agent received it.
class profile::base {
  notify { 'puppet-conductor: applied profile::base': }
}
