"""Several PLATs behind ECMP (issue 12): the ``[ha]`` section of plat.toml and the
configurations v6mostly writes for the engines that do the work (bird2 for BGP and
BFD, conntrackd for the NAPT66 state). v6mostly never speaks BGP itself."""
