/*  export.h — which declarations libembedflow exports.

    The library is built with hidden visibility: only what a public
    header declares between EF_API_BEGIN and EF_API_END is exported from
    libembedflow.so, so the runtime's internal functions cannot be linked
    against by accident and the ABI is exactly these headers. In C++ the
    same pair gives the declarations C linkage.
*/
#ifndef EF_EXPORT_H
#define EF_EXPORT_H

#ifdef __cplusplus
#define EF_API_BEGIN                                                           \
    _Pragma ("GCC visibility push(default)") extern "C"                        \
    {
#define EF_API_END                                                             \
    }                                                                          \
    _Pragma ("GCC visibility pop")
#else
#define EF_API_BEGIN _Pragma ("GCC visibility push(default)")
#define EF_API_END   _Pragma ("GCC visibility pop")
#endif

#endif
