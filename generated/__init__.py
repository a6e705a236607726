"""Parser generated from qcow2.ksy by kaitai-struct-compiler; do not edit."""
