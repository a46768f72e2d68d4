"""Resolver: where is X in this kernel?  Offsets, struct layouts, function prototypes and
surftrace expressions from a dbhive DB, offline.

    from resolver import Resolver
    r = Resolver.open(db="info-6.1.0-47-cloud-amd64.db")
    r.offset("task_struct.files").offset
"""
from .api import FuncInfo, MemberInfo, Offset, Param, Resolver, StructInfo
from .errors import (AbsentMember, BadPath, ExprError, NoKernelDB, NoSuchFunction, NoSuchType,
                     NotAPointer, ResolverError)

__all__ = ["Resolver", "Offset", "StructInfo", "MemberInfo", "FuncInfo", "Param",
           "ResolverError", "AbsentMember", "BadPath", "ExprError", "NoKernelDB",
           "NoSuchFunction", "NoSuchType", "NotAPointer"]
