#version 330 core
// Face profiling (training/profiling.py): the source image re-projected through a mesh whose vertices moved
// (the face turned in 3D, its surroundings stretched); each vertex samples the image where it was.

#if defined VERTEX_SHADER

in vec3 in_pos;     // moved position: canvas px (x right, y down) and depth in [0, 1]
in vec2 in_src;     // where the vertex was in the source image: [0, 1] texture coordinates
uniform vec2 size;  // canvas size, px
out vec2 v_src;

void main() {
    vec2 ndc = (in_pos.xy + 0.5) / size * 2.0 - 1.0;  // pixel centres at integer px, as the labels
    gl_Position = vec4(ndc.x, -ndc.y, in_pos.z * 2.0 - 1.0, 1.0);
    v_src = in_src;
}

#elif defined FRAGMENT_SHADER

uniform sampler2D image;
in vec2 v_src;
out vec4 f_color;

void main() {
    f_color = vec4(texture(image, v_src).rgb, 1.0);
}

#endif
