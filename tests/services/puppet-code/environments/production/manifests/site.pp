# Classification comes from the ENC (puppet-conductor enc); nodes it does not
# name still get an empty catalog instead of a "could not find node" error.
node default {}
