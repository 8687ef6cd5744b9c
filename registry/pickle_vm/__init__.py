"""A pickle virtual machine that never imports or calls: the heart of the safety audit."""
